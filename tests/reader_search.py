"""A RAG app's side of the reader tests, run by `.venv-readers/bin/python` (the frameworks whose pins clash with
requirements.txt; see requirements-readers.txt): opens one framework's own vector store on a store the
pipeline wrote and runs similarity searches with precomputed query vectors (no model in this venv).

stdin: `{"reader": NAME, "store": {...connection...}, "queries": [{"vector": [...], "k": N, "filter": ...}]}`
stdout: one JSON list per query of `{"text", "metadata", "score", "ref_doc_id"}`, best first.
Imports nothing from the project (it is not installed in that venv).
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable


class QueryVectors:
    """A LangChain `Embeddings` stand-in that only answers queries with the vectors it was given, in order."""

    def __init__(self) -> None:
        self.pending: list[list[float]] = []

    def embed_query(self, text: str) -> list[float]:
        return self.pending.pop(0)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("the reader never writes")


def langchain_embeddings(vectors: QueryVectors) -> Any:
    from langchain_core.embeddings import Embeddings

    class Precomputed(Embeddings):
        def embed_query(self, text: str) -> list[float]:
            return vectors.embed_query(text)

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return vectors.embed_documents(texts)

    return Precomputed()


def pinecone_index(store: dict[str, Any]) -> Any:
    from pinecone import Pinecone

    return Pinecone(api_key=store["api_key"]).Index(host=store["host"])


def langchain_pinecone(store: dict[str, Any]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    from langchain_pinecone import PineconeVectorStore

    vectors = QueryVectors()
    vs = PineconeVectorStore(index=pinecone_index(store), embedding=langchain_embeddings(vectors), text_key="text",
                             namespace=store.get("namespace") or None)

    def search(query: dict[str, Any]) -> list[dict[str, Any]]:
        vectors.pending.append(query["vector"])
        found = vs.similarity_search_with_score("the query", k=query["k"], filter=query.get("filter"))
        return [{"text": d.page_content, "metadata": d.metadata, "score": s, "ref_doc_id": None} for d, s in found]

    return search


def llamaindex_pinecone(store: dict[str, Any]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    from llama_index.vector_stores.pinecone import PineconeVectorStore

    vs = PineconeVectorStore(pinecone_index=pinecone_index(store), namespace=store.get("namespace") or None)
    if store.get("delete_ref_doc_id"):
        vs.delete(ref_doc_id=store["delete_ref_doc_id"])
    return lambda query: llamaindex_query(vs, query)


def llamaindex_query(vs: Any, query: dict[str, Any]) -> list[dict[str, Any]]:
    from llama_index.core.vector_stores import ExactMatchFilter, MetadataFilters, VectorStoreQuery

    filters = MetadataFilters(filters=[ExactMatchFilter(key=k, value=v) for k, v in query["filter"].items()]) \
        if query.get("filter") else None
    result = vs.query(VectorStoreQuery(query_embedding=query["vector"], similarity_top_k=query["k"], filters=filters))
    return [{"text": n.get_content(), "metadata": n.metadata, "score": s, "ref_doc_id": n.ref_doc_id}
            for n, s in zip(result.nodes, result.similarities)]


def langchain_postgres(store: dict[str, Any]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """`langchain_postgres.PGVectorStore` on the sink's own table: its columns named, nothing copied."""
    from langchain_postgres import PGEngine, PGVectorStore

    engine = PGEngine.from_connection_string(url=store["url"])
    vectors = QueryVectors()
    vs = PGVectorStore.create_sync(engine=engine, table_name=store["table"], embedding_service=langchain_embeddings(
        vectors), id_column="id", content_column="text", embedding_column="embedding",
        metadata_columns=["doc_id", "namespace", "chunk_index", "chunk_count", "version"],
        metadata_json_column="metadata")

    def search(query: dict[str, Any]) -> list[dict[str, Any]]:
        vectors.pending.append(query["vector"])
        found = vs.similarity_search_with_score("the query", k=query["k"], filter=query.get("filter"))
        return [{"text": d.page_content, "metadata": d.metadata, "score": s, "ref_doc_id": None} for d, s in found]

    return search


def llamaindex_postgres(store: dict[str, Any]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """LlamaIndex's `PGVectorStore` on the sink's `data_<table>` view (nothing set up by LlamaIndex)."""
    from llama_index.vector_stores.postgres import PGVectorStore

    url = store["url"].split("://", 1)[1]
    vs = PGVectorStore(connection_string=f"postgresql+psycopg://{url}",
                       async_connection_string=f"postgresql+psycopg://{url}", table_name=store["table"],
                       embed_dim=384, perform_setup=False)
    return lambda query: llamaindex_query(vs, query)


def langchain_mongodb(store: dict[str, Any]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    from langchain_mongodb import MongoDBAtlasVectorSearch
    from pymongo import MongoClient

    vectors = QueryVectors()
    collection = MongoClient(store["uri"])[store["database"]][store["collection"]]
    vs = MongoDBAtlasVectorSearch(collection=collection, embedding=langchain_embeddings(vectors),
                                  index_name="vector_index", text_key="text", embedding_key="embedding")

    def search(query: dict[str, Any]) -> list[dict[str, Any]]:
        vectors.pending.append(query["vector"])
        found = vs.similarity_search_with_score("the query", k=query["k"], pre_filter=query.get("filter"))
        return [{"text": d.page_content, "metadata": d.metadata, "score": s, "ref_doc_id": None} for d, s in found]

    return search


def llamaindex_mongodb(store: dict[str, Any]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    from llama_index.vector_stores.mongodb import MongoDBAtlasVectorSearch
    from pymongo import AsyncMongoClient, MongoClient

    vs = MongoDBAtlasVectorSearch(mongodb_client=MongoClient(store["uri"]),
                                  async_mongodb_client=AsyncMongoClient(store["uri"]), db_name=store["database"],
                                  collection_name=store["collection"], vector_index_name="vector_index",
                                  embedding_key="embedding", text_key="text", metadata_key="metadata")
    if store.get("delete_ref_doc_id"):
        vs.delete(ref_doc_id=store["delete_ref_doc_id"])
    return lambda query: llamaindex_query(vs, query)


READERS = {"langchain-pinecone": langchain_pinecone, "llamaindex-pinecone": llamaindex_pinecone,
           "langchain-postgres": langchain_postgres, "llamaindex-postgres": llamaindex_postgres,
           "langchain-mongodb": langchain_mongodb,
           "llamaindex-mongodb": llamaindex_mongodb}


def main() -> None:
    request = json.load(sys.stdin)
    search = READERS[request["reader"]](request["store"])
    print(json.dumps([search(q) for q in request["queries"]], default=str))


if __name__ == "__main__":
    main()
