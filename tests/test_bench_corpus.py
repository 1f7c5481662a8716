from bench.corpus import changed_corpus, make_corpus


def test_corpus_is_deterministic_and_of_mixed_lengths():
    docs = make_corpus(200)
    assert docs == make_corpus(200) and docs != make_corpus(200, seed=8)
    lengths = sorted(len(text.split()) for _, text in docs)
    assert lengths[0] < 70 and lengths[-1] > 400


def test_changed_corpus_edits_the_requested_share_of_documents():
    docs = make_corpus(200)
    edited, chosen = changed_corpus(docs, 0.05)
    changed = {d for (d, a), (_, b) in zip(docs, edited) if a != b}
    assert changed == chosen and len(chosen) == 10
