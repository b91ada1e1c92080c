"""The `mirage` command.

mirage demo memory [--out DIR] [--frames N] ...   simulated room, closed loop: video + plot
mirage bench memory --json PATH [--quick]          latent memory vs RGB cache, side by side
"""

from __future__ import annotations

import argparse
import sys


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirage", description="Mirage: latent spatial memory for video world models"
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"mirage: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
