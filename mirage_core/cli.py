"""The `mirage` command.

mirage rollout [--image IMG] [--trajectory NAME|FILE] --out DIR [--weights DIR | --tiny]
                                                   Algorithm 1: image + cameras -> video
mirage demo memory [--out DIR] [--frames N] ...   simulated room, closed loop: video + plot
mirage bench memory --json PATH [--quick]          latent memory vs RGB cache, side by side
mirage bench generator [--size tiny|full]          rollout time / GPU memory, random weights
mirage bench graph [--chunks N]                    what the ROS 2 graph adds per chunk
mirage bench ros [--n 50] [--no-launch]            4 MiB image latency, launch -> first frame
mirage launch NAME [arg:=value ...] [--timeout S]  a ROS 2 graph as rclpy processes
"""

from __future__ import annotations

import argparse
import math
import sys

from mirage_core.argparsing import IntermixedArgumentParser


def _demo_memory(args: argparse.Namespace) -> int:
    from mirage_core.demo.memory_demo import MemoryDemoConfig, run_memory_demo

    kw = {"out_dir": args.out}
    if args.frames is not None:
        kw["num_frames"] = args.frames
    if args.height is not None:
        kw["height"] = args.height
    if args.width is not None:
        kw["width"] = args.width
    summary = run_memory_demo(MemoryDemoConfig(**kw), progress=not args.no_progress)
    print(f"wrote {args.out}/memory_demo.mp4, memory_demo.png, memory_demo.json")
    for policy, s in summary["summary"].items():
        print(
            f"  {policy:>10s}: cache {s['final_mib']:.2f} MiB ({s['final_points']:,d} points), "
            f"mean hole rate {s['mean_hole_rate']:.3f}, "
            f"mean readout PSNR on visible cells {s['mean_psnr_visible']:.1f} dB"
        )
    return 0


def _bench_memory(args: argparse.Namespace) -> int:
    from mirage_core.bench.memory_bench import BenchConfig, run_memory_bench

    run_memory_bench(BenchConfig.make(args.quick), json_path=args.json)
    return 0


def _rollout_job_config(args: argparse.Namespace):
    """``mirage rollout``'s parsed arguments -> the typed :class:`RolloutJobConfig`."""
    from mirage_core.rollout.job import RolloutJobConfig

    kw = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    kw["memory"] = not kw.pop("no_memory")
    kw["video"] = not kw.pop("no_video")
    kw["progress"] = not kw.pop("no_progress")
    return RolloutJobConfig(**kw)


def _rollout(args: argparse.Namespace) -> int:
    from mirage_core.rollout.job import run_rollout_job

    cfg = _rollout_job_config(args)
    s = run_rollout_job(cfg)
    t = s["time_s_total"]
    print(f"wrote {s['frames']} frames to {cfg.out}/ (video.mp4, frames/, cameras.json, "
          f"memory_stats.json) in {s['wall_s']:.1f} s")
    print(f"  memory: {s['final_points']:,d} points, {s['final_bytes'] / 2**20:.2f} MiB, "
          f"{s['mean_growth_bytes_per_chunk'] / 2**20:.3f} MiB/chunk")
    print("  time per stage (s, all chunks): " + ", ".join(f"{k} {v:.2f}" for k, v in t.items()))
    share = s["memory_readout_update_share_of_chunk_time"]
    if share is not None:
        print(f"  memory readout + update: {100 * share:.2f}% of chunk time")
    return 0


def _add_rollout_parser(sub) -> None:
    from mirage_core.generator.loading import OFFLOAD_MODES
    from mirage_core.memory import MERGE_POLICIES
    from mirage_core.rollout.chunked import CONDITIONING_MODES
    from mirage_core.rollout.job import DEFAULT_PROMPT
    from mirage_core.trajectory import TRAJECTORY_NAMES
    from mirage_core.trajectory_io import FORMATS as TRAJECTORY_FORMATS

    r = sub.add_parser(
        "rollout",
        help="generate a 3D-consistent video from an image and a camera trajectory",
        description=(
            "Algorithm 1 of Mirage. Without --image the embedded default scene is used (the "
            "first view of the simulated PyBullet room, with ground-truth depth and masks). "
            "--tiny runs everything with tiny random-weight models on the CPU (the frames are "
            "noise; the pipeline, memory and timings are real)."
        ),
    )
    r.add_argument("--out", default="out/rollout", help="output directory (default out/rollout)")
    r.add_argument("--image", default=None, help="input RGB image (H, W multiples of 32)")
    r.add_argument(
        "--trajectory", default="loop",
        help=f"motion name ({', '.join(TRAJECTORY_NAMES)}) or trajectory file: TUM, KITTI, "
        "RealEstate10K (intrinsics scaled to the image), nerfstudio/Blender transforms.json "
        "(default loop)",
    )
    r.add_argument(
        "--trajectory-format", dest="trajectory_format", default=None,
        choices=TRAJECTORY_FORMATS,
        help="force the trajectory file's format (default: detected from its data lines)",
    )
    r.add_argument("--weights", default=None, help="diffusers-format Wan2.2-TI2V-5B directory")
    r.add_argument("--tiny", action="store_true", help="tiny random-weight models on the CPU")
    r.add_argument("--side-branch", dest="side_branch", default=None,
                   help="trained weights: a side-branch .safetensors, a `mirage train` checkpoint "
                   "dir (side branch + LoRA) or output dir (newest checkpoint); 'zero' for an "
                   "untrained no-op branch")
    r.add_argument("--prompt", default=DEFAULT_PROMPT, help="text prompt")
    r.add_argument("--prompt-embeds", dest="prompt_embeds", default=None,
                   help="precomputed UMT5 prompt states (.safetensors); skips the text encoder")
    r.add_argument("--chunks", type=int, default=None,
                   help="chunks of 32 new frames (default 3 for motions, all that fit for files)")
    r.add_argument("--steps", type=int, default=40, help="UniPC steps per chunk (default 40)")
    r.add_argument("--stop-sigma", dest="stop_sigma", type=float, default=0.0, metavar="SIGMA",
                   help="stop each chunk's sampler at this noise level and output the model's "
                        "posterior-mean estimate (blurrier, higher PSNR; default 0 = the "
                        "paper's sampler; docs/generator.md)")
    r.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    r.add_argument("--height", type=int, default=None, help="default-scene height")
    r.add_argument("--width", type=int, default=None, help="default-scene width")
    r.add_argument("--fov-deg", dest="fov_deg", type=float, default=60.0,
                   help="vertical field of view for generated motions (default 60)")
    r.add_argument("--speed", type=float, default=None, help="per-frame step of the motion")
    r.add_argument("--fps", type=float, default=24.0, help="video frame rate (default 24)")
    r.add_argument("--depth", default="auto",
                   help="auto | sim | da3:DIR | constant:Z (smoke tests only)")
    r.add_argument("--masks", default="auto", help="auto | none | sim | sam3:DIR")
    r.add_argument("--no-memory", dest="no_memory", action="store_true",
                   help="ablation: no memory conditioning")
    r.add_argument("--conditioning", choices=CONDITIONING_MODES, default="latent",
                   help="latent memory (Mirage) or the RGB point-cloud baseline")
    r.add_argument("--merge-policy", dest="merge_policy", choices=MERGE_POLICIES,
                   default="fill_empty", help="latent memory merge policy")
    r.add_argument("--hole-fill", dest="hole_fill", type=int, default=None, metavar="PASSES",
                   help="latent readout hole-fill passes (default: the model's, its marker's "
                        "readout_hole_fill; 0 = the paper's Eq. 5)")
    r.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if present)")
    r.add_argument("--offload", choices=OFFLOAD_MODES, default="none",
                   help="'model': components wait on the CPU between uses (24-48 GB GPUs)")
    r.add_argument("--text-encoder-device", dest="text_encoder_device", default=None,
                   help="run UMT5 here (e.g. cpu)")
    r.add_argument("--vae-tiling", dest="vae_tiling", action="store_true",
                   help="spatial VAE tiling (less memory)")
    r.add_argument("--vae-bf16", dest="vae_bf16", action="store_true",
                   help="VAE in bf16 (half its memory; default float32 as Wan2.2's reference: "
                   "every memory write goes through the VAE)")
    r.add_argument("--no-video", dest="no_video", action="store_true", help="PNG frames only")
    r.add_argument("--no-progress", dest="no_progress", action="store_true",
                   help="no progress bar")
    r.set_defaults(func=_rollout)


def _bench_generator(args: argparse.Namespace) -> int:
    from mirage_core.bench.generator_bench import GeneratorBenchConfig, run_generator_bench

    run_generator_bench(GeneratorBenchConfig(
        size=args.size, device=args.device, chunks=args.chunks, steps=args.steps,
        offload=tuple(args.offload.split(",")), json_path=args.json,
    ))
    return 0


def _bench_graph(args: argparse.Namespace) -> int:
    from mirage_ros.bench_graph import run_graph_bench
    from mirage_ros.node_base import require_ros

    require_ros()
    run_graph_bench(args.chunks, args.reps, args.steps, args.json)
    return 0


def _bench_ros(args: argparse.Namespace) -> int:
    from mirage_ros.bench_ros import run_bench_ros_args
    from mirage_ros.node_base import require_ros

    require_ros()
    return run_bench_ros_args(args)


def _launch(args: argparse.Namespace) -> int:
    from mirage_ros.launch_specs import LAUNCHES
    from mirage_ros.launcher import parse_launch_args, run_launch

    if args.show_args:
        spec = LAUNCHES[args.name]
        parse_launch_args(spec, args.args)  # arguments given with --show-args are checked too
        print(f"{spec.name}: {spec.description}")
        for a in spec.args:
            v = str(a.default).lower() if isinstance(a.default, bool) else (
                a.default if a.default != "" else "''")
            print(f"  {f'{a.name}:={v}':<26} {a.description}")
        print("  NODE.PARAM:=VALUE          any parameter of one node; config/"
              f"{spec.name}.yaml sets:")
        print(_show_nodes(spec))
        return 0
    return run_launch(args.name, args.args, domain_id=args.domain_id, network=args.network,
                      timeout_s=args.timeout)


def _show_nodes(spec) -> str:
    """One wrapped line per node of ``spec``: name, executable, the YAML's parameter names."""
    import textwrap

    from mirage_ros.launch_specs import node_params_from_yaml

    lines = []
    for n in spec.nodes:
        try:
            params = ", ".join(node_params_from_yaml(spec.name, n.name)) or "(defaults)"
        except (OSError, ValueError) as e:  # a broken or missing YAML: say so, list the rest
            params = f"(cannot read the parameter file: {e})"
        cond = f", if {n.if_arg}" if n.if_arg else ""
        lines.append(textwrap.fill(f"{n.name} ({n.executable}{cond}): {params}", width=96,
                                   initial_indent="    ", subsequent_indent="      "))
    return "\n".join(lines)


def _domain_id(text: str) -> int:
    """argparse type: a ROS domain id, 0..232 (the range ROS 2 allows on every platform)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= v <= 232:
        raise argparse.ArgumentTypeError(f"a ROS domain id is 0..232, got {v}")
    return v


def _positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0 (``nan`` would never time out)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return v


def _add_launch_parser(sub) -> None:
    from mirage_ros.launch_specs import LAUNCHES

    la = sub.add_parser(
        "launch", help="start a ROS 2 graph as `ros2 launch mirage NAME_launch.py` would",
        description="Start the nodes of a launch graph as separate rclpy processes (real ROS 2; "
        "what `ros2 launch` does, for installs without the launch package, e.g. the PyPI "
        "wheels), with parameters from config/NAME.yaml and the launch arguments on top. "
        "Discovery stays on this host unless --network. Options and arguments go in any "
        "order. Ctrl-C stops every node cleanly.")
    la.add_argument("name", choices=sorted(LAUNCHES), help="the graph to start")
    la.add_argument("args", nargs="*", metavar="arg:=value",
                    help="launch arguments (see --show-args)")
    la.add_argument("--show-args", action="store_true",
                    help="list the launch arguments with defaults and exit")
    la.add_argument("--domain-id", type=_domain_id, default=None,
                    help="ROS domain, 0..232 (default $ROS_DOMAIN_ID or 0)")
    la.add_argument("--network", action="store_true",
                    help="discover peers on the network too (default: this host only, "
                    "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)")
    la.add_argument("--timeout", type=_positive_seconds, default=None,
                    help="stop everything after this many seconds (exit 124)")
    la.set_defaults(func=_launch)


#: ``mirage GROUP COMMAND ...``: each command keeps its own argparse (and --help)
DELEGATED = {
    "data": {
        "prepare": ("mirage_core.data.prepare", "main_prepare",
                    "frames + cameras -> clips (latents, depth, masks) in an LMDB store"),
        "synth": ("mirage_core.data.synth", "main_synth",
                  "synthetic training clips from the simulated camera"),
        "validate": ("mirage_core.data.validate", "main_validate",
                     "report what is broken in a clip store"),
        "reencode": ("mirage_core.data.reencode", "main_reencode",
                     "re-encode a lossless-codec store with a trained VAE"),
    },
    "codec": {
        "fit-pca": ("mirage_core.train.codec", "main_fit_pca",
                    "fit the PCA video codec (the shipped model's) to a store's frames"),
        "train": ("mirage_core.train.codec", "main_codec_train",
                  "train the small Wan2.2-layout VAE on a store's frames"),
    },
    "eval": {
        "closed-loop": ("mirage_core.eval.closed_loop", "main_closed_loop",
                        "closed-loop protocol: last frame vs input frame (docs/evaluation.md)"),
        "novel-view": ("mirage_core.eval.closed_loop", "main_novel_view",
                       "metrics on held-out frames"),
        "efficiency": ("mirage_core.eval.efficiency", "main_efficiency",
                       "Figure 5: cache read time and footprint, latent vs RGB cache"),
        "export-worldscore": ("mirage_core.eval.worldscore", "main_export_worldscore",
                              "a rollout directory in WorldScore's layout"),
        "heldout": ("mirage_core.eval.heldout", "main_heldout",
                    "memory ablation on held-out rooms: Mirage vs RGB cache vs no memory vs "
                    "the readout (docs/model_card.md)"),
    },
    "train": {
        "": ("mirage_core.train", "main_train",
             "train the side branch (stage 1) and LoRA (stage 2) from a config"),
    },
}


def _delegate(argv: list[str]) -> int | None:
    """Run ``mirage data|eval|train ...`` commands; ``None`` if ``argv`` is not one."""
    import importlib

    if not argv or argv[0] not in DELEGATED:
        return None
    group, cmds = argv[0], DELEGATED[argv[0]]
    if "" in cmds:
        name, rest = "", argv[1:]
    elif len(argv) > 1 and argv[1] in cmds:
        name, rest = argv[1], argv[2:]
    else:
        lines = [f"usage: mirage {group} {{{','.join(cmds)}}} ... [-h]", ""]
        lines += [f"  {c:<18} {h}" for c, (_m, _f, h) in cmds.items()]
        print("\n".join(lines), file=sys.stderr if len(argv) > 1 else sys.stdout)
        return 2 if len(argv) > 1 and argv[1] not in ("-h", "--help") else 0
    module, func, _help = cmds[name]
    try:
        return int(getattr(importlib.import_module(module), func)(rest) or 0)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"mirage {group} {name}: error: {e}".replace("  ", " "), file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    # options may come anywhere after a sub-command's name (`mirage launch NAME --timeout 5
    # tiny:=true`), as with `ros2 launch`
    parser = IntermixedArgumentParser(
        prog="mirage", description="Mirage: latent spatial memory for video world models"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_rollout_parser(sub)

    demo = sub.add_parser("demo", help="demos that write videos and plots")
    demo_sub = demo.add_subparsers(dest="what", required=True)
    dm = demo_sub.add_parser(
        "memory", help="build the memory in a simulated room along a closed loop"
    )
    dm.add_argument(
        "--out", default="out/demo_memory", help="output directory (default: out/demo_memory)"
    )
    dm.add_argument("--frames", type=int, default=None, help="frames on the closed loop")
    dm.add_argument("--height", type=int, default=None, help="image height (multiple of 16)")
    dm.add_argument("--width", type=int, default=None, help="image width (multiple of 16)")
    dm.add_argument("--no-progress", action="store_true", help="no progress bar")
    dm.set_defaults(func=_demo_memory)

    bench = sub.add_parser("bench", help="benchmarks that print figures and write JSON")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    bm = bench_sub.add_parser("memory", help="latent memory vs RGB point-cloud cache")
    bm.add_argument("--json", default="out/bench_memory.json", help="where to write the figures")
    bm.add_argument("--quick", action="store_true", help="smaller sizes, < 1 minute on 2 cores")
    bm.set_defaults(func=_bench_memory)
    bg = bench_sub.add_parser(
        "generator", help="rollout time and GPU memory with random weights, per offload mode"
    )
    bg.add_argument("--size", choices=("tiny", "full"), default="tiny",
                    help="tiny (CPU) or full Wan2.2-TI2V-5B (GPU)")
    bg.add_argument("--device", default=None, help="cuda / cpu (default: cuda if present)")
    bg.add_argument("--chunks", type=int, default=2, help="chunks per run (default 2)")
    bg.add_argument("--steps", type=int, default=40, help="UniPC steps per chunk (default 40)")
    bg.add_argument("--offload", default="none,model",
                    help="comma-separated offload modes to compare (GPU only)")
    bg.add_argument("--json", default="out/bench_generator.json", help="where to write records")
    bg.set_defaults(func=_bench_generator)
    bgr = bench_sub.add_parser(
        "graph", help="per-chunk time added by the ROS 2 graph (memory node + frame topics) "
        "over the in-process rollout, and 4 MiB image latency (rclpy, this host)")
    bgr.add_argument("--chunks", type=int, default=2, help="chunks per rollout (default 2)")
    bgr.add_argument("--reps", type=int, default=2, help="runs of each mode (default 2)")
    bgr.add_argument("--steps", type=int, default=40, help="UniPC steps per chunk (default 40)")
    bgr.add_argument("--json", default="out/bench_graph.json", help="where to write figures")
    bgr.set_defaults(func=_bench_graph)
    from mirage_ros.bench_ros import add_bench_ros_arguments

    bros = bench_sub.add_parser(
        "ros", help="4 MiB sensor_msgs/Image one-way latency between two rclpy processes and "
        "`mirage launch sim_rollout` start -> first generated frame")
    add_bench_ros_arguments(bros)
    bros.set_defaults(func=_bench_ros)
    _add_launch_parser(sub)
    for group, cmds in DELEGATED.items():  # listed for --help; run by _delegate
        helps = "; ".join(f"{c}: {h}" if c else h for c, (_m, _f, h) in cmds.items())
        sub.add_parser(group, help=helps, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    code = _delegate(argv)
    if code is not None:
        return code
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"mirage: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
