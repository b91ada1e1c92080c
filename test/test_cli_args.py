"""Options anywhere on the command line (issue 11, item 7).

``ros2 launch PKG FILE arg:=v`` users type options before, between and after launch
arguments; plain argparse refuses an option between a sub-command's name and a
``nargs="*"`` positional ("unrecognized arguments"). Every orientation must parse the same.
"""

import pytest

from mirage_core.cli import build_parser
from mirage_core.eval.closed_loop import closed_loop_parser

ORDERS = [
    ["launch", "sim_rollout", "--timeout", "5", "tiny:=true", "chunks:=1"],
    ["launch", "sim_rollout", "tiny:=true", "--timeout", "5", "chunks:=1"],
    ["launch", "sim_rollout", "tiny:=true", "chunks:=1", "--timeout", "5"],
    ["launch", "--timeout", "5", "sim_rollout", "tiny:=true", "chunks:=1"],
]


@pytest.mark.parametrize("argv", ORDERS, ids=["after-name", "between", "last", "before-name"])
def test_launch_options_anywhere(argv):
    a = build_parser().parse_args(argv)
    assert a.name == "sim_rollout"
    assert a.args == ["tiny:=true", "chunks:=1"]
    assert a.timeout == 5.0


def test_launch_flags_anywhere():
    a = build_parser().parse_args(["launch", "planner", "--network", "tiny:=true",
                                   "--domain-id", "7"])
    assert (a.name, a.args, a.network, a.domain_id) == ("planner", ["tiny:=true"], True, 7)


@pytest.mark.parametrize("argv", [["launch", "sim_rollout", "--frobnicate", "tiny:=true"],
                                  ["launch", "sim_rollout", "tiny:=true", "--frobnicate"]])
def test_unknown_option_refused_with_the_subcommands_usage(capsys, argv):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--frobnicate" in err and "usage: mirage launch" in err


@pytest.mark.parametrize("value", ["nan", "-5", "0", "inf", "soon"])
def test_launch_timeout_must_be_finite_and_positive(capsys, value):
    """nan never times out (a comparison with nan is false); -5 ends the graph at once."""
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["launch", "sim_rollout", "--timeout", value])
    assert e.value.code == 2 and "--timeout" in capsys.readouterr().err


def test_show_args_checks_the_arguments_given(capsys):
    from mirage_core.cli import main

    assert main(["launch", "sim_rollout", "--show-args"]) == 0
    assert "tiny:=" in capsys.readouterr().out
    assert main(["launch", "sim_rollout", "foo:=bar", "--show-args"]) == 2
    assert "no argument 'foo'" in capsys.readouterr().err


def test_subcommands_still_parse():
    a = build_parser().parse_args(["bench", "memory", "--quick", "--json", "x.json"])
    assert a.quick and a.json == "x.json"


def test_closed_loop_dirs_around_options():
    a = closed_loop_parser().parse_args(["r1", "--pose-tol-m", "0.2", "r2", "--json", "o.json",
                                         "r3"])
    assert a.rollout_dirs == ["r1", "r2", "r3"]
    assert a.pose_tol_m == 0.2 and a.json == "o.json"


def test_rollout_vae_precision_flag_reaches_the_job():
    from mirage_core.cli import _rollout_job_config

    args = build_parser().parse_args(["rollout", "--tiny", "--vae-bf16", "--out", "o"])
    assert _rollout_job_config(args).vae_bf16 is True
    args = build_parser().parse_args(["rollout", "--tiny", "--out", "o"])
    assert _rollout_job_config(args).vae_bf16 is False
