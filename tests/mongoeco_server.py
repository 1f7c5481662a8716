"""Runs mongoeco's MongoDB wire-protocol server on 127.0.0.1 (a stand-in: no MongoDB server can run here).
Started by the tests with a Python >= 3.13 interpreter (`.venv-mongoeco`); prints `PORT <n>` when ready and
serves until killed.

With `--search-indexes` it also reads commands on stdin: `SEARCH_INDEX <db> <collection> <index JSON>`
creates an Atlas-style search index through mongoeco's own API (its wire server has no `createSearchIndexes`;
its vectorSearch indexes take `vector` fields only, so `filter` fields are left out: it filters any path) and
answers `OK` or `ERROR <message>` on stdout; `$vectorSearch` then runs against it over the wire."""
import asyncio
import json
import sys

from mongoeco import AsyncMongoClient, SearchIndexModel
from mongoeco.wire import AsyncMongoEcoProxyServer


async def serve(port: int, search_indexes: bool) -> None:
    client = AsyncMongoClient()
    server = AsyncMongoEcoProxyServer(client=client, host="127.0.0.1", port=port)
    address = await server.start()
    print(f"PORT {address.port}", flush=True)
    if not search_indexes:
        await asyncio.Event().wait()
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            await asyncio.Event().wait()
        command, _, rest = line.strip().partition(" ")
        try:
            if command != "SEARCH_INDEX":
                raise ValueError(f"unknown command {command!r}")
            database, collection, model = rest.split(" ", 2)
            spec = json.loads(model)  # as pymongo's create_search_index takes it: {name, type, definition}
            definition = spec["definition"]
            if spec.get("type") == "vectorSearch":  # mongoeco takes vector fields only (and filters any path)
                definition = {"fields": [f for f in definition["fields"] if f.get("type") == "vector"]}
            await client[database][collection].create_search_index(SearchIndexModel(
                definition, name=spec["name"], type=spec.get("type", "search")))
            print("OK", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            print(f"ERROR {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if not a.startswith("--")]
    asyncio.run(serve(int(arguments[0]) if arguments else 0, "--search-indexes" in sys.argv))
