"""Procedural scenes, revisiting camera paths and the train/held-out split of `mirage data synth`.

Tiny sizes: 32x48 renders, few frames, the tiny random VAE. Planning tests need no PyBullet.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mirage_core.data.synth import (
    SCENE_SEED_RANGES,
    SynthConfig,
    clip_key,
    draw_scene_seed,
    main_synth,
    plan_clip,
    render_plan,
    synth_clip,
    synth_clips,
)
from mirage_core.errors import MirageInputError
from mirage_core.geometry import backproject, intrinsics_from_fov, project
from mirage_core.sim.camera_paths import (
    PATH_FAMILIES,
    REVISIT_FAMILIES,
    PathPlanningError,
    SceneLayout,
    pose_from_yaw_pitch,
    sample_camera_path,
)
from mirage_core.sim.procedural import make_scene_spec
from mirage_core.sim.textures import TextureSpec, make_texture

HW = (32, 48)
_STRUCTURE = ("floor", "ceiling", "wall", "poster", "door", "lamp", "ground", "distant")


def _visible_fraction(depth0, K, T0, Ti, depth_i) -> float:
    """Share of frame 0's pixels with geometry that camera ``i`` sees: back-project frame 0's
    depth (``mirage_core.geometry.backproject``), project into camera ``i``; a point counts if
    it lands in the image in front of the camera and is not hidden (camera i's depth there is
    sky or at least 0.9 x the point's depth)."""
    valid = depth0 > 0
    pts = backproject(torch.from_numpy(np.where(valid, depth0, 1.0)), torch.from_numpy(K),
                      torch.from_numpy(T0)).reshape(-1, 3)[torch.from_numpy(valid.reshape(-1))]
    xy, z = project(pts.double(), torch.from_numpy(K), torch.from_numpy(np.linalg.inv(Ti)))
    xy, z = xy.numpy(), z.numpy()
    H, W = depth_i.shape
    u, v = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
    inside = (z > 0.05) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    seen = np.zeros(len(z), dtype=bool)
    d = depth_i[v[inside], u[inside]]
    seen[inside] = (d == 0) | (d > 0.9 * z[inside])
    return float(seen.mean())


# --------------------------------------------------------------------------- textures, specs


def test_textures_are_deterministic_and_differ():
    spec = TextureSpec("bricks", (0.8, 0.3, 0.2), (0.9, 0.9, 0.9), seed=4, size=32)
    a, b = make_texture(spec), make_texture(spec)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    other = make_texture(TextureSpec("bricks", (0.8, 0.3, 0.2), (0.9, 0.9, 0.9), seed=5, size=32))
    assert not np.array_equal(a, other)
    assert a.std() > 5  # a pattern, not a flat colour
    with pytest.raises(MirageInputError, match="valid kinds"):
        TextureSpec("marble", (0, 0, 0), (1, 1, 1), seed=0)
    with pytest.raises(MirageInputError, match=r"colour_a"):
        TextureSpec("plain", (0, 0, 2), (1, 1, 1), seed=0)


def test_scene_spec_is_a_pure_function_of_its_seed():
    a, b = make_scene_spec("room", 7, 2), make_scene_spec("room", 7, 2)
    assert a.bodies == b.bodies and a.movers == b.movers and a.extent == b.extent
    assert np.array_equal(a.layout.obstacles, b.layout.obstacles)
    # the static room does not depend on n_dynamic, and mover k is the same for any n > k
    c = make_scene_spec("room", 7, 0)
    assert c.bodies == a.bodies and c.movers == ()
    d = make_scene_spec("room", 7, 1)
    assert len(d.movers) == 1 and d.movers[0] == a.movers[0]
    assert make_scene_spec("room", 8, 2).bodies != a.bodies
    with pytest.raises(MirageInputError, match="preset"):
        make_scene_spec("moon", 0)
    with pytest.raises(MirageInputError, match="n_dynamic"):
        make_scene_spec("room", 0, -1)


def test_rooms_vary_in_size_textures_and_objects():
    specs = [make_scene_spec("room", s) for s in range(8)]
    assert len({sp.extent for sp in specs}) == 8
    floors = {next(b.texture for b in sp.bodies if b.name == "floor") for sp in specs}
    walls = {next(b.texture for b in sp.bodies if b.name == "wall_+x") for sp in specs}
    assert len(floors) == 8 and len(walls) == 8
    assert len({tex.kind for tex in floors}) >= 3
    objects = [sorted({b.name.rstrip("0123456789") for b in sp.bodies
                       if not b.name.startswith(_STRUCTURE)}) for sp in specs]
    assert len({tuple(o) for o in objects}) >= 4  # different object sets
    counts = [sum(1 for b in sp.bodies if not b.name.startswith(_STRUCTURE)) for sp in specs]
    assert len(set(counts)) >= 3


def test_rendered_textures_and_colours_vary_between_seeds():
    pytest.importorskip("pybullet")
    from mirage_core.sim.pybullet_scene import PyBulletScene

    H, W = HW
    K = intrinsics_from_fov(W, H, 70.0).numpy()
    wall_means, stds = [], []
    for seed in range(4):
        with PyBulletScene("room", seed=seed, procedural=True, n_dynamic=0) as scene:
            x0, x1, y0, y1 = scene.layout.bounds_xy
            eye = (0.5 * (x0 + x1), 0.5 * (y0 + y1), 1.4)
            T = pose_from_yaw_pitch(np.array([eye]), np.array([0.0]), np.array([-0.35]))[0]
            f = scene.render(T, K, H, W)
            names = np.vectorize(lambda i, sc=scene: sc.body_names.get(int(i), ""))(
                f.segmentation)
            wall = np.char.startswith(names.astype(str), "wall")
            floor = names == "floor"
            assert wall.sum() > 20 and floor.sum() > 20, (seed, wall.sum(), floor.sum())
            wall_means.append(f.rgb[wall].mean(axis=0) / 255.0)
            kind = next(b.texture.kind for b in scene.spec.bodies if b.name == "floor")
            stds.append((kind, float(f.rgb[floor].std(axis=0).max()) / 255.0))
    m = np.stack(wall_means)
    gaps = [np.abs(m[i] - m[j]).max() for i in range(4) for j in range(i + 1, 4)]
    assert min(gaps) > 0.03, gaps  # wall colours differ between every pair of rooms
    # a flat, evenly lit floor has no spread: the spread comes from the texture
    assert all(s > 0.02 for kind, s in stds if kind != "plain"), stds


def test_outdoor_scene_has_open_sky_of_its_own_colour():
    pytest.importorskip("pybullet")
    from mirage_core.sim.pybullet_scene import PyBulletScene

    H, W = HW
    with PyBulletScene("outdoor", seed=3, procedural=True) as scene:
        f = scene.render(scene.default_start_pose(), intrinsics_from_fov(W, H, 60.0), H, W)
        assert f.sky_mask[: H // 4].mean() > 0.3
        assert (f.rgb[f.sky_mask] == scene.spec.sky_rgb).all()
        assert np.isinf(f.depth[f.sky_mask]).all() and not f.sky_mask[-H // 4:].any()


# --------------------------------------------------------------------------- moving objects


def test_moving_objects_move_and_are_masked():
    pytest.importorskip("pybullet")
    from mirage_core.sim.pybullet_scene import PyBulletScene, pose_looking_at

    H, W = 48, 64
    K = intrinsics_from_fov(W, H, 70.0).numpy()
    with PyBulletScene("room", seed=11, procedural=True, n_dynamic=3) as scene:
        assert len(scene.movers) == len(scene.dynamic_ids) >= 2
        for k, mover in enumerate(scene.movers):
            times = np.linspace(0.0, 6.0, 25)
            path = np.stack([mover.position(t) for t in times])
            far = int(np.argmax(np.linalg.norm(path - path[0], axis=1)))
            assert np.linalg.norm(path[far] - path[0]) > 0.3  # it really moves
            for t, p in ((0.0, path[0]), (times[far], path[far])):
                eye = p + np.array([1.6, 0.4, 0.9])
                f = scene.render(pose_looking_at(eye, p), K, H, W, time=t)
                own = f.segmentation == scene.dynamic_ids[k]
                assert own.sum() > 20, (k, t)
                np.testing.assert_array_equal(f.dynamic_mask, np.isin(f.segmentation,
                                                                      scene.dynamic_ids))
                xy, _ = project(torch.from_numpy(p)[None], torch.from_numpy(K),
                                torch.from_numpy(np.linalg.inv(pose_looking_at(eye, p))))
                u, v = np.floor(xy[0].numpy()).astype(int)
                assert f.dynamic_mask[v, u], "the object's centre projects into the mask"
        np.testing.assert_allclose(scene.object_positions(0.5)[0], scene.movers[0].position(0.5))
    with PyBulletScene("room", seed=11, procedural=True, n_dynamic=0) as scene:
        assert scene.dynamic_ids == [] and not scene.dynamic
    with pytest.raises(ValueError, match="procedural"):
        PyBulletScene("room", n_dynamic=2)


def test_static_clips_have_no_dynamic_pixels_and_moving_ones_do():
    pytest.importorskip("pybullet")
    static = plan_clip(SynthConfig(frames=9, hw=HW, dynamic=0, outdoor_fraction=0.0), 0)
    _, _, mask, _ = render_plan(static, HW)
    assert static.movers == 0 and not mask.any()  # a room: no sky, nothing moves
    # a clip that sees a moving object stores it in the mask (and only it: no sky indoors)
    cfg = SynthConfig(frames=33, hw=HW, dynamic=3, outdoor_fraction=0.0, paths=("orbit",))
    plan = next(p for p in (plan_clip(cfg, i) for i in range(12)) if p.movers > 0)
    _, depth, mask, _ = render_plan(plan, HW, frames=range(0, 33, 2))
    assert mask.any(), plan.key
    assert (depth[mask] > 0).all()  # indoors every masked pixel is a (moving) object


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("preset", ["room", "outdoor"])
@pytest.mark.parametrize("family", PATH_FAMILIES)
def test_paths_stay_inside_and_keep_clear_of_objects(family, preset):
    """Checked against the scene's bodies and moving objects directly, not the layout."""
    for seed in range(3):
        spec = make_scene_spec(preset, seed, 2)
        lay = spec.layout
        F = 65
        path = sample_camera_path(family, lay, F, np.random.default_rng(seed))
        T = path.T_world_cam
        assert T.shape == (F, 4, 4)
        np.testing.assert_allclose(T[:, :3, :3] @ T[:, :3, :3].transpose(0, 2, 1),
                                   np.broadcast_to(np.eye(3), (F, 3, 3)), atol=1e-9)
        c, gap = T[:, :3, 3], lay.clearance - 1e-9
        xmin, xmax, ymin, ymax = lay.bounds_xy
        assert (c[:, 0] >= xmin + gap).all() and (c[:, 0] <= xmax - gap).all()
        assert (c[:, 1] >= ymin + gap).all() and (c[:, 1] <= ymax - gap).all()
        assert (c[:, 2] >= lay.z_range[0] - 1e-9).all() and (c[:, 2] <= lay.z_range[1] + 1e-9).all()
        if preset == "room":
            assert (c[:, 2] < spec.extent[2] - 0.5).all()  # well below the ceiling
        for b in spec.bodies:
            if b.name.startswith(_STRUCTURE):
                continue
            dist = np.hypot(c[:, 0] - b.pos[0], c[:, 1] - b.pos[1])
            assert (dist >= b.footprint + gap).all(), (family, seed, b.name)
        for f in range(F):
            for m in spec.movers:
                p = m.position(f / 10.0)
                assert math.hypot(c[f, 0] - p[0], c[f, 1] - p[1]) >= m.body.footprint + gap
        # no roll: the camera's right axis stays horizontal (image up is world up); segments
        # paths are rolled only through their pitch, which keeps it horizontal too
        np.testing.assert_allclose(T[:, 2, 0], 0.0, atol=1e-9)


def test_layout_check_rejects_a_path_through_an_object():
    lay = make_scene_spec("room", 0).layout
    x, y, r = lay.obstacles[0]
    through = np.array([[x - 2 * r, y, 1.5], [x, y, 1.5], [x + 2 * r, y, 1.5]])
    assert not lay.fits(through)
    x0, _, y0, y1 = lay.bounds_xy
    assert not lay.fits(np.array([[x0 + 0.1, 0.5 * (y0 + y1), 1.5]]))  # too close to a wall
    tiny = SceneLayout((0.0, 0.5, 0.0, 0.5), (1.0, 1.5))
    with pytest.raises(PathPlanningError, match="no 'loop' path fits"):
        sample_camera_path("loop", tiny, 17, np.random.default_rng(0), max_tries=5)
    with pytest.raises(MirageInputError, match="valid families"):
        sample_camera_path("spiral", lay, 17, np.random.default_rng(0))


@pytest.mark.parametrize("family", REVISIT_FAMILIES)
def test_each_family_comes_back_to_what_it_saw(family):
    """The last frame sees most of frame 0 again, some frame in between saw little of it, the
    end pose is near the start pose, and no frame is inside an object."""
    pytest.importorskip("pybullet")
    F = 65
    cfg = SynthConfig(frames=F, hw=HW, paths=(family,), outdoor_fraction=0.5, dynamic=1,
                      seed=2)
    for index in range(2):
        plan = plan_clip(cfg, index)
        sel = list(range(0, F, 8))
        _, depth, _, K = render_plan(plan, HW, frames=sel)
        T = plan.T_world_cam
        scale = 3.0 if plan.preset == "outdoor" else 1.0
        assert np.linalg.norm(T[-1, :3, 3] - T[0, :3, 3]) <= 0.2 * scale
        cos = np.clip((np.trace(T[0, :3, :3].T @ T[-1, :3, :3]) - 1) / 2, -1, 1)
        assert math.degrees(math.acos(cos)) <= 10.0
        seen = [_visible_fraction(depth[0], K, T[0], T[f], depth[j]) for j, f in enumerate(sel)]
        assert seen[-1] >= 0.6, (plan.key, plan.preset, seen)
        assert min(seen[1:-1]) <= 0.5, (plan.key, plan.preset, seen)
        assert depth[depth > 0].min() > 0.25  # the camera never enters an object


def test_visible_fraction_can_fail():
    """The revisit measure is not trivially high: a view turned 180 degrees sees nothing of
    frame 0, and the same view sees all of it."""
    pytest.importorskip("pybullet")
    from mirage_core.sim.pybullet_scene import PyBulletScene

    H, W = HW
    K = intrinsics_from_fov(W, H, 60.0).numpy()
    with PyBulletScene("room", seed=1, procedural=True, n_dynamic=0) as scene:
        T0 = scene.default_start_pose()
        T1 = pose_from_yaw_pitch(T0[None, :3, 3], np.array([math.pi]), np.array([0.0]))[0]
        d0 = scene.render(T0, K, H, W).depth
        d1 = scene.render(T1, K, H, W).depth
    assert _visible_fraction(d0, K, T0, T0, d0) > 0.99
    assert _visible_fraction(d0, K, T0, T1, d1) < 0.05


# --------------------------------------------------------------------------- clips, splits


def test_same_seed_gives_an_identical_clip():
    pytest.importorskip("pybullet")
    from mirage_core.codecs import WanVAECodec

    vae = WanVAECodec.from_config("tiny", seed=0)
    cfg = SynthConfig(frames=5, hw=HW, seed=5, dynamic=2, outdoor_fraction=0.5)
    a, b = synth_clip(vae, cfg, 3), synth_clip(vae, cfg, 3)
    for name in ("latents", "frame_latents", "depth", "mask", "T_world_cam", "K"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.key == b.key == "synth/5/000003"
    assert torch.equal(a.T_world_cam[0], torch.eye(4, dtype=torch.float64))
    # another index (or run seed) is another clip
    _, depth4, _, _ = render_plan(plan_clip(cfg, 4), HW, frames=[0, 4])
    assert not np.array_equal(a.depth.numpy(), depth4)
    other = plan_clip(SynthConfig(frames=5, hw=HW, seed=6, dynamic=2, outdoor_fraction=0.5), 3)
    assert other.scene_seed != plan_clip(cfg, 3).scene_seed


def test_heldout_scene_seeds_never_appear_in_training():
    (t_lo, t_hi), (h_lo, h_hi) = SCENE_SEED_RANGES["train"], SCENE_SEED_RANGES["heldout"]
    assert t_lo < t_hi and h_lo < h_hi and (t_hi <= h_lo or h_hi <= t_lo)
    rng = np.random.default_rng(0)
    train_draws = np.array([draw_scene_seed(rng, "train") for _ in range(20000)])
    held_draws = np.array([draw_scene_seed(rng, "heldout") for _ in range(20000)])
    assert ((train_draws >= t_lo) & (train_draws < t_hi)).all()
    assert ((held_draws >= h_lo) & (held_draws < h_hi)).all()
    train, held = set(), set()
    for seed in (0, 1):
        for i in range(25):
            p = plan_clip(SynthConfig(frames=9, seed=seed), i)
            q = plan_clip(SynthConfig(frames=9, seed=seed, held_out=True), i)
            assert p.split == "train" and q.split == "heldout"
            assert p.key.startswith("synth/") and q.key.startswith("synth-heldout/")
            train.add(p.scene_seed)
            held.add(q.scene_seed)
    assert train.isdisjoint(held)
    assert all(t_lo <= s < t_hi for s in train) and all(h_lo <= s < h_hi for s in held)
    assert clip_key(SynthConfig(held_out=True, seed=3), 7) == "synth-heldout/3/000007"


def test_config_rejects_bad_values():
    ok = SynthConfig(paths=("loop", "orbit", "loop"))
    assert ok.paths == ("loop", "orbit") and ok.split == "train"
    assert SynthConfig(paths="orbit").paths == ("orbit",)
    bad = [
        (dict(frames=33 + 1), "4k\\+1"),
        (dict(frames=1), "4k\\+1"),
        (dict(hw=(30, 48)), "multiples of 16"),
        (dict(paths=("spiral",)), "loop, out_and_back"),
        (dict(paths=()), "one or more"),
        (dict(dynamic=-1), "dynamic"),
        (dict(dynamic=True), "dynamic"),
        (dict(outdoor_fraction=1.5), "outdoor_fraction"),
        (dict(fov_range=(80.0, 50.0)), "fov_range"),
        (dict(seed=-1), "seed"),
        (dict(n_clips=-2), "n_clips"),
        (dict(fps=0.0), "fps"),
    ]
    for kw, match in bad:
        with pytest.raises(MirageInputError, match=match):
            SynthConfig(**kw)


def test_main_synth_flags_and_split_guard(tmp_path, capsys):
    pytest.importorskip("pybullet")
    pytest.importorskip("lmdb")
    out = tmp_path / "held"
    args = ["--out", str(out), "--vae", "tiny", "--n-clips", "2", "--frames", "9",
            "--height", "32", "--width", "48", "--paths", "orbit,turn_away_back",
            "--dynamic", "0", "--outdoor-fraction", "1", "--held-out", "--no-progress"]
    assert main_synth(args) == 0
    assert "written 2" in capsys.readouterr().out
    lines = [json.loads(s) for s in (out / "synth_clips.jsonl").read_text().splitlines()]
    assert [d["key"] for d in lines] == ["synth-heldout/0/000000", "synth-heldout/0/000001"]
    for d in lines:
        assert d["split"] == "heldout" and d["preset"] == "outdoor" and d["movers"] == 0
        assert d["family"] in ("orbit", "turn_away_back") and d["frames"] == 9
        assert SCENE_SEED_RANGES["heldout"][0] <= d["scene_seed"] < SCENE_SEED_RANGES["heldout"][1]
    # the training split cannot be written into a held-out store
    assert main_synth([a for a in args if a != "--held-out"]) == 2
    assert "held-out clips" in capsys.readouterr().out
    assert main_synth([*args[:12], "--paths", "spiral", "--no-progress"]) == 2
    assert "spiral" in capsys.readouterr().out
    assert main_synth([*args[:12], "--threads", "0", "--no-progress"]) == 2
    assert "--threads" in capsys.readouterr().out
    train_store = tmp_path / "train_store"
    cfg = SynthConfig(n_clips=1, frames=5, hw=HW, progress=False)
    assert synth_clips(train_store, "tiny", cfg) == (1, 0)
    with pytest.raises(MirageInputError, match="training clips"):
        synth_clips(train_store, "tiny", SynthConfig(n_clips=1, frames=5, hw=HW, held_out=True,
                                                     progress=False))
