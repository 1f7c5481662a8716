"""ID scheme 2: distinct `(namespace, doc_id, chunk_index)` triples never share a key or an ID, in any sink's
encoding; the start-up message for a store of another scheme says how to move on."""
from __future__ import annotations

import hashlib
import json
import uuid
from typing import Optional

from hypothesis import given
from hypothesis import strategies as st

from transforms.ids import (ID_SCHEME, SCHEME_MARKER_ID, SCHEME_MARKER_UUID, chunk_key, chunk_point_id,
                            document_key, document_point_id, pinecone_document_prefix, pinecone_vector_id,
                            scheme_comment, scheme_in_comment, scheme_mismatch)

# Characters that matter to the encodings (separators, escapes, quotes) mixed with any other text.
tricky = st.text(alphabet=st.sampled_from(list(':#%"\\[],-sha256') + ["é", "\u2028", "\x00", " "]), max_size=8)
strings = st.one_of(tricky, st.text(max_size=12), st.text(min_size=130, max_size=400))
namespaces = st.one_of(st.none(), strings)
doc_ids = strings.filter(bool)
triples = st.tuples(namespaces, doc_ids, st.integers(min_value=0, max_value=10_000))


def same_document(a: tuple[Optional[str], str], b: tuple[Optional[str], str]) -> bool:
    return (a[0] or "", a[1]) == (b[0] or "", b[1])  # no namespace and "" are one document


@given(triples, triples)
def test_distinct_triples_have_distinct_chunk_keys_and_ids(a, b):
    (ns_a, doc_a, i_a), (ns_b, doc_b, i_b) = a, b
    same = same_document((ns_a, doc_a), (ns_b, doc_b)) and i_a == i_b
    assert (chunk_key(doc_a, i_a, ns_a) == chunk_key(doc_b, i_b, ns_b)) == same
    assert (chunk_point_id(doc_a, i_a, ns_a) == chunk_point_id(doc_b, i_b, ns_b)) == same


@given(namespaces, doc_ids, namespaces, doc_ids)
def test_distinct_documents_have_distinct_keys_ids_and_pinecone_prefixes(ns_a, doc_a, ns_b, doc_b):
    same = same_document((ns_a, doc_a), (ns_b, doc_b))
    assert (document_key(doc_a, ns_a) == document_key(doc_b, ns_b)) == same
    assert (document_point_id(doc_a, ns_a) == document_point_id(doc_b, ns_b)) == same
    assert (pinecone_document_prefix(doc_a, ns_a) == pinecone_document_prefix(doc_b, ns_b)) == same


@given(triples, triples)
def test_pinecone_ids_are_printable_ascii_listable_by_prefix_and_never_the_marker(a, b):
    (ns_a, doc_a, i_a), (ns_b, doc_b, i_b) = a, b
    vector_id = pinecone_vector_id(doc_a, i_a, ns_a)
    assert vector_id.isascii() and vector_id.isprintable() and " " not in vector_id and len(vector_id) <= 512
    prefix = pinecone_document_prefix(doc_a, ns_a)
    assert "#" not in prefix and prefix != SCHEME_MARKER_ID
    # listing one document's vectors by `prefix#` never finds another document's
    other = pinecone_vector_id(doc_b, i_b, ns_b)
    assert other.startswith(prefix + "#") == same_document((ns_a, doc_a), (ns_b, doc_b))


def test_namespace_x_doc_y_and_doc_x_y_get_different_ids_everywhere():
    assert chunk_point_id("y", 0, "x") != chunk_point_id("x::y", 0)
    assert document_point_id("y", "x") != document_point_id("x::y")
    assert pinecone_vector_id("y", 0, "x") != pinecone_vector_id("x::y", 0)
    assert chunk_point_id("y", 0, "") == chunk_point_id("y", 0, None)


def test_a_long_pinecone_doc_id_is_hashed_to_a_form_no_literal_doc_id_has():
    long_id = "é" * 200
    hashed = pinecone_document_prefix(long_id)
    key = json.dumps(["", long_id], separators=(",", ":")).encode("ascii")
    assert hashed == "sha256:" + hashlib.sha256(key).hexdigest()
    assert pinecone_document_prefix(hashed) == hashed.replace(":", "%3A")
    assert pinecone_document_prefix("x" * 400) == "x" * 400 and pinecone_document_prefix("x" * 401) != "x" * 401


def test_canonical_keys_and_ids_are_fixed():
    """The documented scheme 2, pinned: changing any of these is a new scheme."""
    assert ID_SCHEME == 2
    assert chunk_key("doc-1", 3, "acme") == '["acme","doc-1",3]'
    assert chunk_key("d\u00e9", 0) == '["","d\\u00e9",0]'
    assert document_key("doc-1") == '["","doc-1"]'
    namespace = uuid.UUID("5b0c2a8e-3f57-4f0e-9a41-6d2f1f8c7b10")
    assert chunk_point_id("doc-1", 3, "acme") == str(uuid.uuid5(namespace, '["acme","doc-1",3]'))
    assert SCHEME_MARKER_UUID == str(uuid.uuid5(namespace, SCHEME_MARKER_ID))
    assert pinecone_vector_id("a b#c:d", 2, "t") == "t::a%20b%23c%3Ad#2"


def test_scheme_mismatch_names_the_store_the_schemes_and_the_way_on():
    assert scheme_mismatch("Qdrant collection 'd'", ID_SCHEME, "another --collection") is None
    old = scheme_mismatch("Qdrant collection 'd'", None, "another --collection")
    assert old is not None and "Qdrant collection 'd' holds data written with ID scheme 1" in old
    assert "re-sync all documents into a new store with another --collection" in old
    newer = scheme_mismatch("pgvector table 't'", 3, "another --pg_table")
    assert newer is not None and "ID scheme 3, newer than this pipeline's scheme 2" in newer
    assert scheme_in_comment(scheme_comment()) == ID_SCHEME and scheme_in_comment("chunks of the wiki") is None
    assert scheme_in_comment(None) is None
