"""Flags that look like ours (or Beam's) but are mistyped are start-up errors naming the right flag, never
echoing the value; Beam's own options still pass through."""
from __future__ import annotations

import pytest

from pipeline.main import main
from pipeline.options import parse_args

SECRET = "hunter2-do-not-echo"


@pytest.mark.parametrize("argv, suggestion", [
    (["--pg-dsn", f"postgresql://sync:{SECRET}@db/sync"], "--pg_dsn"),
    (["--kafka-config", f"sasl.password={SECRET}"], "--kafka_config"),
    ([f"--mongo-uri=mongodb://u:{SECRET}@h"], "--mongo_uri"),
    ([f"--pg_dns=postgresql://sync:{SECRET}@db/sync"], "--pg_dsn"),
    (["--redis_ulr", f"redis://:{SECRET}@h"], "--redis_url"),
    (["--runer=DirectRunner"], "--runner"),
    (["--direct-num-workers", "2"], "--direct_num_workers"),
])
def test_a_mistyped_flag_is_a_one_line_start_up_error_without_its_value(
        argv: list[str], suggestion: str, capsys: pytest.CaptureFixture[str]):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"did you mean {suggestion}?" in err
    assert SECRET not in err


def test_beam_options_and_flags_unknown_to_both_pass_to_beam():
    _, beam_args = parse_args(["--direct_num_workers=2", "--direct_running_mode", "multi_processing", "--streaming",
                               "--experiments=use_runner_v2", "--temp_location", "gs://b/tmp",
                               "--some_runner_specific_setting=1"])
    assert beam_args == ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode",
                         "multi_processing", "--streaming", "--experiments=use_runner_v2", "--temp_location",
                         "gs://b/tmp", "--some_runner_specific_setting=1"]
