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


KAFKA = ["--source", "kafka", "--kafka_bootstrap", "127.0.0.1:9092", "--kafka_topic", "docs", "--kafka_group", "g"]


@pytest.mark.parametrize("switch, expected", [
    ([], False), (["--kafka_stop_at_end"], True), (["--kafka_stop_at_end=true"], True),
    (["--kafka_stop_at_end=false"], False), (["--kafka_stop_at_end", "FALSE"], False),
])
def test_an_on_off_flag_takes_an_optional_true_or_false_as_a_flex_template_passes_it(
        switch: list[str], expected: bool):
    config, beam_args = parse_args(KAFKA + switch)
    assert config.source.stop_at_end is expected
    assert beam_args == ["--runner=DirectRunner"]


def test_an_on_off_flag_with_another_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(KAFKA + ["--kafka_stop_at_end=maybe"])
    assert exit_info.value.code == 2 and "expected true or false, not 'maybe'" in capsys.readouterr().err
