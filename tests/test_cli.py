"""The scripts' flags: a value out of range is one line that names that flag and its value alone
(never a list of flags that might be wrong), exit status 2."""
import re

import pytest

import ablations
import sample
import speed
import train
import video

CASES = [(sample.get_args, ["x.png", "--td", "-1"], "--td", "-1"),
         (sample.get_args, ["x.png", "--min-pixels", "-3"], "--min-pixels", "-3"),
         (sample.get_args, ["--evaluate", "--sweep-steps", "1,0"], "--sweep-steps", "0"),
         (sample.get_args, ["x.png", "--eta", "2"], "--eta", "2"),
         (train.get_args, ["--eta", "1.5"], "--eta", "1.5"),
         (video.main, ["clip.gif", "--td", "-2"], "--td", "-2"),
         (video.main, ["--evaluate", "--sweep", "4", "0"], "--sweep", "0"),
         (train.get_args, ["--warmup", "-1"], "--warmup", "-1"),
         (train.get_args, ["--grad-clip", "-1"], "--grad-clip", "-1"),
         (train.get_args, ["--log-every", "0"], "--log-every", "0"),
         (ablations.get_args, ["sampling", "--sweep-td", "0,-1"], "--sweep-td", "-1"),
         (speed.get_args, ["step", "--repeat", "0"], "--repeat", "0")]


@pytest.mark.parametrize("parse, argv, flag, value", CASES, ids=[f"{c[0].__module__}{c[2]}" for c in CASES])
def test_an_out_of_range_flag_is_named_alone(parse, argv, flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    named = set(re.findall(r"--[a-z][a-z-]*", err.split(" (see --help)")[0]))
    assert named == {flag} and f"got {value}" in err, err


@pytest.mark.parametrize("parse, argv", [(train.get_args, ["--amp"]), (speed.get_args, ["step", "--amp"])])
def test_amp_on_the_cpu_needs_native_bf16(parse, argv, capsys, monkeypatch):
    import cli
    monkeypatch.setattr(cli, "cpu_has_bf16", lambda: False)
    with pytest.raises(SystemExit) as e:
        parse(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "no native bf16" in err and "drop --amp" in err, err
    monkeypatch.setattr(cli, "cpu_has_bf16", lambda: True)
    assert parse(argv).amp
