"""Runs mongoeco's MongoDB wire-protocol server on 127.0.0.1 (a stand-in: no MongoDB server can run here).
Started by the tests with a Python >= 3.13 interpreter (`.venv-mongoeco`); prints `PORT <n>` when ready and
serves until killed."""
import asyncio
import sys

from mongoeco.wire import AsyncMongoEcoProxyServer


async def serve(port: int) -> None:
    server = AsyncMongoEcoProxyServer(host="127.0.0.1", port=port)
    address = await server.start()
    print(f"PORT {address.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
