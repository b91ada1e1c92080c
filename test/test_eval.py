"""Evaluation code: WorldScore export, Figure 5 efficiency study, closed-loop/novel-view."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mirage_core.errors import MirageInputError
from mirage_core.eval.closed_loop import (
    ClosedLoopConfig,
    closed_loop_eval,
    closed_loop_eval_fn,
    mirror_trajectory,
    novel_view_eval,
    write_json,
)
from mirage_core.eval.worldscore import (
    CAMERA_FIELDS,
    IMAGE_FIELDS,
    WORLDSCORE_LAYOUTS,
    export_worldscore,
    opencv_c2w_to_worldscore,
    read_rollout_dir,
    worldscore_c2w_to_opencv,
    worldscore_instance_subdir,
)
from mirage_core.trajectory import make_trajectory


def _synthetic_rollout(d, frames, poses=None, prompt="a room"):
    """A rollout directory in RolloutWriter's layout: frames [N, H, W, 3] uint8."""
    from PIL import Image

    (d / "frames").mkdir(parents=True)
    n, H, W = frames.shape[:3]
    if poses is None:
        poses = make_trajectory("loop", num_frames=n).T_world_cam
    for i, f in enumerate(frames):
        Image.fromarray(f).save(d / "frames" / f"{i:05d}.png")
    K = [[100.0, 0, W / 2], [0, 100.0, H / 2], [0, 0, 1]]
    (d / "cameras.json").write_text(json.dumps({
        "image_hw": [H, W], "K": K, "fps": 10.0,
        "frames": [{"index": i, "timestamp": i / 10, "T_world_cam": poses[i].tolist()}
                   for i in range(n)],
    }))
    (d / "memory_stats.json").write_text(json.dumps({"job": {"prompt": prompt}}))
    return d


def _frames(n=5, H=32, W=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


# ------------------------------------------------------------------ WorldScore export


def test_export_worldscore_layout(tmp_path):
    pytest.importorskip("imageio")
    fr = _frames()
    src = _synthetic_rollout(tmp_path / "roll", fr)
    info = export_worldscore(src, tmp_path / "ws", camera_path=["push_in"])
    out = tmp_path / "ws"
    assert info["num_frames"] == 5 and not info["video_copied"]  # no video.mp4: re-encoded
    # WorldScore's save_frames naming; the evaluator sorts frames/*.png|jpg by path
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:03d}.png" for i in range(5)]
    assert (out / "videos" / "output.mp4").stat().st_size > 0
    cam = json.loads((out / "camera_data.json").read_text())
    img = json.loads((out / "image_data.json").read_text())
    assert np.allclose(cam["cameras_interp"],
                       opencv_c2w_to_worldscore(read_rollout_dir(src).T_world_cam))
    assert cam["scale"] == 1.0 and cam["focal_length"] == 100.0
    assert np.asarray(cam["cameras"]).shape == (2, 4, 4)  # anchors 0 and N-1
    assert cam[CAMERA_FIELDS["mirage"]]["image_hw"] == [32, 48]
    assert img["camera_path"] == ["push_in"] and img["prompt_list"] == ["a room", "a room"]
    assert img["total_frames"] == 5 and img["num_scenes"] == 1 and img["anchor_frame_idx"] == [0, 4]
    assert info["missing_keys"] == ["content_list"]  # only a benchmark instance record has it
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out / "frames" / "003.png")), fr[3])
    assert np.array_equal(np.asarray(Image.open(out / "input_image.png")), fr[0])


def test_export_worldscore_keys_read_by_evaluator(tmp_path):
    """Pins what WorldScore's evaluator (worldscore/benchmark/helpers/evaluator.py) reads:
    camera_data["cameras_interp"] (+ .get("scale")); image_data camera_path[0], total_frames,
    prompt_list, num_scenes, anchor_frame_idx, content_list; input_image.png; frames/ with
    len(frames) == total_frames == len(cameras_interp). Also its dataloader's directory nesting."""
    src = _synthetic_rollout(tmp_path / "roll", _frames(n=7))
    (src / "video.mp4").write_bytes(b"stub")  # skip encoding
    instance = {"visual_movement": "static", "visual_style": "photorealistic",
                "scene_type": "indoor",
                "image": "static/photorealistic/indoor/dining_spaces/017.png",
                "camera_path": ["push_in", "pan_left"], "prompt_list": ["a", "b", "c"],
                "content_list": [["table"], ["chair"], ["lamp"]], "style": ""}
    (tmp_path / "inst.json").write_text(json.dumps(instance))
    (tmp_path / "ws/static/photorealistic/indoor/dining_spaces/017").mkdir(parents=True)
    stale = tmp_path / "ws/static/photorealistic/indoor/dining_spaces/017/evaluation.json"
    stale.write_text("{}")
    info = export_worldscore(src, tmp_path / "ws", instance=tmp_path / "inst.json", nest=True)
    d = tmp_path / "ws" / worldscore_instance_subdir(instance)
    assert info["sample_dir"] == str(d) and info["missing_keys"] == []
    assert d == tmp_path / "ws/static/photorealistic/indoor/dining_spaces/017"
    assert not stale.exists()  # WorldScore would reuse a stale evaluation.json
    img = json.loads((d / "image_data.json").read_text())
    cam = json.loads((d / "camera_data.json").read_text())
    frames = sorted(p for p in (d / "frames").iterdir() if p.suffix in (".png", ".jpg"))
    assert len(frames) == img["total_frames"] == len(cam["cameras_interp"]) == 7
    assert img["num_scenes"] == 2 and img["anchor_frame_idx"] == [0, 3, 6]
    assert img["camera_path"][0] in WORLDSCORE_LAYOUTS
    assert img["prompt_list"] == ["a", "b", "c"] and len(img["content_list"]) == 3
    assert (d / "input_image.png").is_file() and (d / "videos/output.mp4").is_file()
    assert np.allclose(cam["cameras"], np.asarray(cam["cameras_interp"])[[0, 3, 6]])
    dyn = {"visual_movement": "dynamic", "visual_style": "stylized", "motion_type": "fluid",
           "image": "dynamic/stylized/fluid/003.jpg"}
    assert worldscore_instance_subdir(dyn).as_posix() == "dynamic/stylized/fluid/003"
    with pytest.raises(MirageInputError, match="cannot be split"):
        export_worldscore(src, tmp_path / "x", camera_path=["push_in"] * 4)  # 6 % 4 != 0
    with pytest.raises(MirageInputError, match="not WorldScore layouts"):
        export_worldscore(src, tmp_path / "x", camera_path=["fly_up"])
    with pytest.raises(MirageInputError, match="needs the WorldScore instance"):
        export_worldscore(src, tmp_path / "x", nest=True)


def test_worldscore_pose_convention():
    """cameras_interp uses the frame WorldScore's camera-error metric maps DROID-SLAM's OpenCV
    c2w estimate into (x-flip on the world side, z-flip on the camera side), and agrees with
    WorldScore's own CameraGen trajectories (PyTorch3D w2c -> Blender c2w)."""
    def metric_map(c2w_cv):  # the metric's conversion of its DROID estimate, step by step
        c = np.diag([-1.0, 1, 1, 1]) @ c2w_cv
        return np.linalg.inv(np.diag([1.0, 1, -1, 1]) @ np.linalg.inv(c))

    def camgen(R_p3d, t_p3d):  # WorldScore's convert_extrinsics_blender on a [R|T] w2c
        w = np.eye(4)
        w[:3, :3], w[:3, 3] = R_p3d, t_p3d
        return np.linalg.inv(np.diag([-1.0, 1, -1, 1]) @ w)

    T = np.asarray(make_trajectory("loop", num_frames=9).T_world_cam, dtype=np.float64)
    ws = opencv_c2w_to_worldscore(T)
    rel = np.linalg.inv(T[0]) @ T
    assert np.allclose(ws, [metric_map(x) for x in rel])
    assert np.allclose(worldscore_c2w_to_opencv(ws), rel)
    assert np.allclose(ws[0], np.diag([-1.0, 1, -1, 1])) and np.allclose(ws[0], camgen(
        np.eye(3), np.zeros(3)))
    a = math.radians(30)
    c, s = math.cos(a), math.sin(a)
    yaw_left = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    cv = np.stack([np.eye(4)] * 4)
    cv[1, 2, 3] = 1.0  # push_in: forward (+Z_cv) by 1
    cv[2, 0, 3] = 0.5  # move_right: +X_cv by 0.5
    cv[3, :3, :3] = yaw_left  # pan_left: optical axis turns toward -X_cv
    ws = opencv_c2w_to_worldscore(cv)
    # CameraGen: push_in T[2] -= 1; move_right T[0] += 0.5; pan_left R = R @ yaw(30 deg)
    assert np.allclose(ws[1], camgen(np.eye(3), [0, 0, -1.0]))
    assert np.allclose(ws[2], camgen(np.eye(3), [0.5, 0, 0]))
    assert np.allclose(ws[3], camgen(yaw_left, np.zeros(3)))


def test_export_copies_video(tmp_path):
    src = _synthetic_rollout(tmp_path / "roll", _frames(n=2))
    (src / "video.mp4").write_bytes(b"not really a video")
    info = export_worldscore(src, tmp_path / "ws", prompt="override")
    assert info["video_copied"]
    assert (tmp_path / "ws/videos/output.mp4").read_bytes() == b"not really a video"
    img = json.loads((tmp_path / "ws/image_data.json").read_text())
    assert img[IMAGE_FIELDS["prompt"]] == "override" and img["prompt_list"] == ["override"] * 2
    # no instance record and no camera_path: WorldScore would fail on these keys
    assert info["missing_keys"] == ["camera_path", "content_list"]


def test_bad_rollout_dirs(tmp_path):
    with pytest.raises(MirageInputError, match="does not exist"):
        read_rollout_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MirageInputError, match="no frames/"):
        export_worldscore(tmp_path / "empty", tmp_path / "ws")
    src = _synthetic_rollout(tmp_path / "roll", _frames(n=3))
    (src / "frames" / "00002.png").unlink()
    with pytest.raises(MirageInputError, match="incomplete rollout"):
        read_rollout_dir(src)
    (src / "cameras.json").unlink()
    with pytest.raises(MirageInputError, match=r"no cameras\.json"):
        closed_loop_eval([src])


# ------------------------------------------------------------------ closed loop / novel view


def test_closed_loop_identical_frames(tmp_path):
    fr = _frames(n=5)
    fr[-1] = fr[0]
    res = closed_loop_eval([_synthetic_rollout(tmp_path / "a", fr)])
    clip = res["clips"][0]
    assert clip["compared_frames"] == [0, 4]
    assert clip["psnr"] == [math.inf] and clip["ssim"][0] == pytest.approx(1.0)
    assert clip["lpips"] is None and "LPIPS not computed" in clip["lpips_note"]
    assert res["mean"]["psnr_infinite"] == 1
    js = json.loads(write_json(res, tmp_path / "r.json").read_text())
    assert js["clips"][0]["psnr"] == ["inf"]


def test_closed_loop_known_psnr(tmp_path):
    fr = np.full((3, 32, 48, 3), 100, dtype=np.uint8)
    fr[-1] = 110  # MSE = (10/255)^2 -> PSNR = 20 log10(25.5)
    res = closed_loop_eval([_synthetic_rollout(tmp_path / "a", fr)])
    assert res["mean"]["psnr_mean"] == pytest.approx(20 * math.log10(25.5))


def test_closed_loop_rejects_open_trajectory(tmp_path):
    poses = make_trajectory("push_in", num_frames=3).T_world_cam
    d = _synthetic_rollout(tmp_path / "a", _frames(n=3), poses=poses)
    with pytest.raises(MirageInputError, match="not a closed loop"):
        closed_loop_eval([d])
    with pytest.raises(MirageInputError, match="at least one"):
        closed_loop_eval([])


def test_closed_loop_with_missing_lpips_weights_says_where_to_get_them(tmp_path):
    from mirage_core.errors import WeightsNotFoundError

    fr = _frames(n=2)
    d = _synthetic_rollout(tmp_path / "a", fr, poses=torch.eye(4).expand(2, 4, 4).double())
    cfg = ClosedLoopConfig(lpips_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsNotFoundError, match=r"missing\.pth"):
        closed_loop_eval([d], cfg)


def test_mirror_trajectory_closes():
    t = make_trajectory("push_in", num_frames=17)
    m = mirror_trajectory(t)
    assert len(m) == 33
    assert torch.allclose(m.T_world_cam[-1], m.T_world_cam[0])
    assert torch.allclose(m.T_world_cam[20], t.T_world_cam[12])
    assert (m.timestamps.diff() > 0).all()
    with pytest.raises(MirageInputError):
        mirror_trajectory(t, num_forward=1)


def test_novel_view_eval(tmp_path):
    fr = _frames(n=4)
    d = _synthetic_rollout(tmp_path / "a", fr)
    res = novel_view_eval(d, {1: fr[1], 3: fr[3]})
    assert res["frames"] == [1, 3] and res["psnr"] == [math.inf, math.inf]
    from PIL import Image

    (tmp_path / "gt").mkdir()
    Image.fromarray(fr[2]).save(tmp_path / "gt" / "00002.png")
    assert novel_view_eval(d, tmp_path / "gt")["ssim"][0] == pytest.approx(1.0)
    with pytest.raises(MirageInputError, match="outside"):
        novel_view_eval(d, {9: fr[0]})
    with pytest.raises(MirageInputError, match="differ in shape"):
        novel_view_eval(d, {1: fr[1][:16]})


def test_closed_loop_on_tiny_rollout(tmp_path):
    """A real (tiny, random-weight) rollout on the loop trajectory: the protocol runs end to
    end; frame 0 vs frame 32 are compared and the loop closes exactly."""
    pytest.importorskip("pybullet")
    from mirage_core.rollout.job import RolloutJobConfig, run_rollout_job

    def rollout_fn(clip, out_dir):
        run_rollout_job(RolloutJobConfig(out=out_dir, tiny=True, steps=2, chunks=1, video=False,
                                         progress=False, trajectory=clip))

    res = closed_loop_eval_fn(rollout_fn, ["loop"], tmp_path)
    clip = res["clips"][0]
    assert clip["compared_frames"] == [0, 32] and clip["pose_gap_m"] < 1e-9
    assert math.isfinite(clip["psnr"][0]) and -1 <= clip["ssim"][0] <= 1
    pytest.importorskip("imageio")
    info = export_worldscore(tmp_path / "clip_000", tmp_path / "ws")
    assert info["num_frames"] == 33 and info["image_hw"] == [128, 224]


# ------------------------------------------------------------------ efficiency (Figure 5)


def test_efficiency_study_small(tmp_path):
    pytest.importorskip("pybullet")
    from mirage_core.eval.efficiency import EfficiencyConfig, run_efficiency_study

    res = run_efficiency_study(EfficiencyConfig(chunks=2, image_hw=(64, 96), device="cpu"),
                               json_path=tmp_path / "e.json", log=lambda *_: None)
    for m in ("latent", "rgb_cache"):
        rec = res["methods"][m]
        assert len(rec["read_s_per_frame"]) == 2 and len(rec["cache_bytes"]) == 2
        assert rec["peak_cache_bytes"] == max(rec["cache_bytes"]) > 0
    assert res["methods"]["rgb_cache"]["peak_cache_bytes"] > res["methods"]["latent"][
        "peak_cache_bytes"]
    assert json.loads((tmp_path / "e.json").read_text())["setup"]["image_hw"] == [64, 96]
    with pytest.raises(MirageInputError):
        EfficiencyConfig(size="huge")
    with pytest.raises(MirageInputError):
        EfficiencyConfig(image_hw=(50, 96))


def test_rollout_stop_sigma_from_the_command_line_stops_every_chunk_early(tmp_path):
    """``mirage rollout --stop-sigma`` reaches the sampler: each chunk takes the steps
    ``SamplerConfig.steps_run`` says (the tiny models' shift), not all of them."""
    pytest.importorskip("pybullet")
    from mirage_core.cli import _rollout_job_config, build_parser
    from mirage_core.generator.loading import random_models
    from mirage_core.generator.sampler import SamplerConfig
    from mirage_core.rollout.job import run_rollout_job

    args = build_parser().parse_args(["rollout", "--tiny", "--steps", "6", "--chunks", "2",
                                      "--stop-sigma", "0.8", "--no-video", "--no-progress",
                                      "--out", str(tmp_path / "r")])
    cfg = _rollout_job_config(args)
    assert cfg.stop_sigma == 0.8
    run_rollout_job(cfg)
    chunks = json.loads((tmp_path / "r" / "memory_stats.json").read_text())["chunks"]
    shift = random_models("tiny", device="cpu").flow_shift
    expected = SamplerConfig(steps=6, flow_shift=shift, stop_sigma=0.8).steps_run
    assert 1 <= expected < 6
    assert [c["steps"] for c in chunks] == [expected, expected]
    with pytest.raises(MirageInputError, match="stop_sigma"):
        _rollout_job_config(build_parser().parse_args(["rollout", "--tiny", "--stop-sigma", "1"]))
    from mirage_core.eval.heldout import HeldoutConfig

    assert HeldoutConfig(stop_sigma=0.7).stop_sigma == 0.7
    with pytest.raises(MirageInputError, match="stop_sigma"):
        HeldoutConfig(stop_sigma=-0.1)
