"""The fetch allow-list (`transforms.uri_policy`): what a `uri` may name, and why anything else is refused."""
from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import given, strategies as st
from pydantic import ValidationError

from transforms.uri_policy import (AzureBlob, AzureEndpoint, BucketObject, LocalFile, UriNotAllowed, UriPolicy,
                                   azure_endpoint, within)

AZURITE = azure_endpoint("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                         "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")


def refused(policy: UriPolicy, uri: str, azure: AzureEndpoint | None = None) -> str:
    with pytest.raises(UriNotAllowed) as info:
        policy.resolve(uri, azure)
    return str(info.value)


def test_nothing_is_allowed_by_default():
    policy = UriPolicy()
    assert "no --allow_local_root" in refused(policy, "/etc/passwd")
    assert "no --allow_local_root" in refused(policy, "file:///etc/passwd")
    assert "not in --allow_bucket" in refused(policy, "gs://bucket/a.txt")
    assert "not in --allow_azure_account" in refused(policy, "https://acct.blob.core.windows.net/c/a.txt")
    assert "only from Azure Blob" in refused(policy, "https://example.com/a.txt")
    assert "are not fetched" in refused(policy, "hdfs://namenode/a.txt")


def test_local_paths_only_under_a_root_after_resolving_dots_and_symlinks(tmp_path: Path):
    root, outside = tmp_path / "docs", tmp_path / "secret"
    root.mkdir(), outside.mkdir()
    (root / "a.txt").write_text("ok"), (outside / "s.txt").write_text("no")
    (root / "escape").symlink_to(outside / "s.txt")
    (root / "dir_escape").symlink_to(outside)
    policy = UriPolicy(local_roots=(str(root),))
    real_root = os.path.realpath(root)
    assert policy.resolve(str(root / "a.txt")) == LocalFile(f"{real_root}/a.txt")
    assert policy.resolve(f"file://{root}/a.txt") == LocalFile(f"{real_root}/a.txt")
    assert policy.resolve(f"file://localhost{root}/sub/../a.txt") == LocalFile(f"{real_root}/a.txt")
    for uri in (str(outside / "s.txt"), f"{root}/../secret/s.txt", f"file://{root}/../secret/s.txt",
                str(root / "escape"), str(root / "dir_escape" / "s.txt"), "/etc/passwd", "/proc/self/environ",
                f"{root}-sibling/a.txt"):
        assert "outside every --allow_local_root" in refused(policy, uri), uri
    assert "are not fetched" in refused(policy, f"file://otherhost{root}/a.txt")
    assert "NUL" in refused(policy, f"{root}/a.txt\0")


def test_a_root_given_through_a_symlink_or_relative_path_is_resolved_too(tmp_path: Path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    policy = UriPolicy(local_roots=("link",))
    assert policy.resolve("real/a.txt") == LocalFile(f"{os.path.realpath(real)}/a.txt")


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.txt"]), min_size=1, max_size=8))
def test_within_agrees_with_normalised_path_prefixes(parts: list[str]):
    root = "/srv/docs"
    path = posixpath.normpath(posixpath.join(root, *parts))
    inside = within(path, root)
    assert inside == (path == root or path.startswith("/srv/docs/"))
    assert inside == (posixpath.commonpath([path, root]) == root)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`(root, outside)`: root holds a folder, a file, and symlinks out (to a file, a folder, `..`)."""
    base = tmp_path_factory.mktemp("tree")
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True), outside.mkdir()
    (root / "a.txt").write_text("in"), (outside / "s.txt").write_text("out")
    (root / "sub" / "up").symlink_to("..")
    (root / "out_file").symlink_to(outside / "s.txt")
    (root / "sub" / "out_dir").symlink_to(outside)
    (root / "sub" / "far").symlink_to("../../outside")
    return root, outside


@given(st.lists(st.sampled_from(["sub", "up", "..", ".", "a.txt", "out_file", "out_dir", "far", "s.txt", "new"]),
                min_size=1, max_size=7), st.booleans())
def test_a_resolved_local_path_is_always_real_and_inside_the_root(tree: tuple[Path, Path], parts: list[str],
                                                                  as_url: bool):
    root, _ = tree
    uri = "/".join([str(root), *parts])
    real_root, real = os.path.realpath(root), os.path.realpath(uri)
    policy = UriPolicy(local_roots=(str(root),))
    try:
        target = policy.resolve(Path(uri).as_uri() if as_url and "." not in parts else uri)
    except UriNotAllowed:
        assert not within(real, real_root)
        return
    assert isinstance(target, LocalFile) and target.path == real and os.path.realpath(target.path) == target.path
    assert within(target.path, real_root)


def test_buckets_are_listed_by_scheme_and_name():
    policy = UriPolicy(buckets=("gs://docs", "s3://raw/"))
    assert policy.resolve("gs://docs/a/b.txt") == BucketObject("gs://docs/a/b.txt", "docs")
    assert policy.resolve("s3://raw/k.txt") == BucketObject("s3://raw/k.txt", "raw")
    assert "gs://raw is not in --allow_bucket" in refused(policy, "gs://raw/k.txt")
    assert "s3://docs-evil" in refused(policy, "s3://docs-evil/k.txt")
    with pytest.raises(ValidationError, match="expected gs://BUCKET"):
        UriPolicy(buckets=("docs",))
    with pytest.raises(ValidationError, match="expected gs://BUCKET"):
        UriPolicy(buckets=("gs://docs/prefix",))


def test_azure_accounts_and_containers():
    policy = UriPolicy(azure_accounts=("acct", "other/docs"))
    assert policy.resolve("https://acct.blob.core.windows.net/c/a%20b.txt?sv=x") == AzureBlob(
        "acct", "c", "a b.txt", url="https://acct.blob.core.windows.net/c/a%20b.txt?sv=x")
    assert policy.resolve("https://other.blob.core.windows.net/docs/a.txt").container == "docs"
    assert "container other/private" in refused(policy, "https://other.blob.core.windows.net/private/a.txt")
    assert "storage account 'evil'" in refused(policy, "https://evil.blob.core.windows.net/c/a.txt")
    assert "only from Azure Blob" in refused(policy, "https://acct.blob.core.windows.net.evil.com/c/a.txt")
    assert "only from Azure Blob" in refused(policy, "https://x.acct.blob.core.windows.net/c/a.txt")
    assert "no connection string" in refused(policy, "azfs://acct/c/a.txt")
    with pytest.raises(ValidationError, match="ACCOUNT or ACCOUNT/CONTAINER"):
        UriPolicy(azure_accounts=("Bad_Name",))


def test_the_connection_strings_account_is_allowed_and_read_with_it_only_at_its_endpoint():
    assert AZURITE == AzureEndpoint("devstoreaccount1", "http", "127.0.0.1", 10000, path_style=True)
    policy = UriPolicy()
    blob = AzureBlob("devstoreaccount1", "docs", "a.txt", url=None)
    assert policy.resolve("http://127.0.0.1:10000/devstoreaccount1/docs/a.txt", AZURITE) == blob
    assert policy.resolve("azfs://devstoreaccount1/docs/a.txt", AZURITE) == blob
    assert policy.resolve("https://devstoreaccount1.blob.core.windows.net/docs/a.txt", AZURITE) == blob
    # another port, host or account at loopback: the URL alone would choose where the request goes
    assert "neither" in refused(policy, "http://127.0.0.1:10001/devstoreaccount1/docs/a.txt", AZURITE)
    assert "neither" in refused(policy, "http://localhost:10000/devstoreaccount1/docs/a.txt", AZURITE)
    assert "neither" in refused(policy, "http://127.0.0.1:10000/devstoreaccount1/docs/a.txt")
    assert "not the connection string's account" in refused(
        policy, "http://127.0.0.1:10000/otheraccount/docs/a.txt", AZURITE)
    # another account: not allowed just because some connection string exists
    assert "storage account 'acct'" in refused(policy, "https://acct.blob.core.windows.net/c/a.txt", AZURITE)
    # listed with a container, the connection's account is limited to it
    limited = UriPolicy(azure_accounts=("devstoreaccount1/docs",))
    assert limited.resolve("http://127.0.0.1:10000/devstoreaccount1/docs/a.txt", AZURITE) == blob
    assert "container devstoreaccount1/private" in refused(
        limited, "http://127.0.0.1:10000/devstoreaccount1/private/a.txt", AZURITE)


def test_connection_string_endpoints():
    cloud = azure_endpoint("DefaultEndpointsProtocol=https;AccountName=Acct;AccountKey=k==;"
                           "EndpointSuffix=core.windows.net")
    assert cloud == AzureEndpoint("acct", "https", "acct.blob.core.windows.net", 443, path_style=False)
    assert azure_endpoint("UseDevelopmentStorage=true") == AzureEndpoint(
        "devstoreaccount1", "http", "127.0.0.1", 10000, path_style=True)
    assert azure_endpoint("BlobEndpoint=https://sasacct.blob.core.windows.net/;SharedAccessSignature=sv=1") \
        == AzureEndpoint("sasacct", "https", "sasacct.blob.core.windows.net", 443, path_style=False)
    assert azure_endpoint("nonsense") is None


def test_a_refusal_never_echoes_a_sas():
    message = refused(UriPolicy(), "https://evil.blob.core.windows.net/c/a.txt?sig=SECRET")
    assert "SECRET" not in message


def test_allow_list_flags_and_config_file_reach_the_fetch(tmp_path: Path):
    from pipeline.options import parse_args

    config = tmp_path / "sync.yaml"
    config.write_text("fetch:\n  allow: {local_roots: [/srv/a], buckets: ['s3://raw']}\n  read_timeout_s: 3\n")
    fetch = parse_args(["--config", str(config), "--allow_bucket", "gs://docs", "--allow_bucket", "gs://kb-docs",
                        "--allow_azure_account", "acct/docs"])[0].fetch
    assert fetch.allow == UriPolicy(local_roots=("/srv/a",), buckets=("gs://docs", "gs://kb-docs"),
                                    azure_accounts=("acct/docs",))
    assert fetch.read_timeout_s == 3 and fetch.retry.max_elapsed_s == 20
    assert parse_args([])[0].fetch.allow == UriPolicy()
    with pytest.raises(ValidationError, match="expected gs://BUCKET"):
        parse_args(["--allow_bucket", "docs"])
