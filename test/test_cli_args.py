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


def test_unknown_option_still_refused(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["launch", "sim_rollout", "--frobnicate", "tiny:=true"])
    assert e.value.code == 2
    assert "--frobnicate" in capsys.readouterr().err


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
