"""The memory node's handlers (mirage_ros.memory_service) with rosbags messages, no DDS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirage_core.geometry import intrinsics_from_fov
from mirage_ros.image_conversion import array_to_image, image_to_array
from mirage_ros.memory_service import MemoryService, MemoryServiceConfig, pca_colours
from mirage_ros.messages import RclpyMessages, latent_to_tensor, pose_from_T, tensor_to_latent

H, W, C = 64, 96, 48


@pytest.fixture(scope="module")
def msgs():
    return RclpyMessages()  # what the memory node builds its messages with


def _camera_info(msgs, K, h=H, w=W):
    return msgs.new("sensor_msgs/msg/CameraInfo", height=h, width=w,
                    k=np.asarray(K, dtype=np.float64).ravel(), distortion_model="plumb_bob",
                    d=np.zeros(5))


def _update_req(msgs, latent, depth, T=None, reset=False, mask=None, K=None, **over):
    Image = msgs.cls("sensor_msgs/msg/Image")
    hdr = msgs.new("std_msgs/msg/Header")
    K = intrinsics_from_fov(W, H, 60.0) if K is None else K
    fields = dict(
        depth=array_to_image(depth.astype(np.float32), "32FC1", Image, hdr),
        camera_info=_camera_info(msgs, K),
        pose=pose_from_T(msgs, torch.eye(4, dtype=torch.float64) if T is None else T),
        latent=tensor_to_latent(msgs, latent),
        reset=reset,
    )
    if mask is not None:
        fields["mask"] = array_to_image(mask.astype(np.uint8) * 255, "mono8", Image, hdr)
    fields.update(over)
    return msgs.new("mirage/srv/UpdateMemory_Request", **fields)


def _read_req(msgs, Ts, K=None):
    K = intrinsics_from_fov(W, H, 60.0) if K is None else K
    return msgs.new("mirage/srv/ReadMemory_Request", poses=[pose_from_T(msgs, T) for T in Ts],
                    camera_info=_camera_info(msgs, K))


def _latent(seed=0):
    return torch.randn((C, H // 16, W // 16), generator=torch.Generator().manual_seed(seed))


def test_initialize_then_read_back_the_same_view_exactly(msgs):
    svc = MemoryService(msgs, MemoryServiceConfig(feature_dtype="float32"))
    z = _latent()
    res = svc.update(_update_req(msgs, z, np.full((H, W), 2.0), reset=True))
    assert res.success, res.message
    assert res.added == (H // 16) * (W // 16) and res.stats.num_points == res.added
    out = svc.read(_read_req(msgs, [torch.eye(4, dtype=torch.float64)] * 2))
    assert out.success, out.message
    lat = latent_to_tensor(out.latents)
    assert lat.shape == (2, C, H // 16, W // 16)
    torch.testing.assert_close(lat[0], z)
    assert (image_to_array(out.masks[0]) == 255).all()
    np.testing.assert_allclose(image_to_array(out.depths[1]), 2.0, rtol=1e-5)
    assert list(out.hole_rates) == [0.0, 0.0]
    st = svc.stats_msg()
    assert st.initialized and st.num_updates == 1 and st.num_readouts == 1


def test_bad_requests_answer_with_reasons_and_change_nothing(msgs):
    svc = MemoryService(msgs)
    z = _latent()
    # Read or update before initialisation.
    r = svc.read(_read_req(msgs, [torch.eye(4, dtype=torch.float64)]))
    assert not r.success and "not initialized" in r.message
    r = svc.update(_update_req(msgs, z, np.full((H, W), 2.0)))
    assert not r.success and "reset=true" in r.message
    assert svc.update(_update_req(msgs, z, np.full((H, W), 2.0), reset=True)).success
    n = svc.memory.num_points
    req = _update_req(msgs, z, np.full((H, W), 2.0))
    req.pose.orientation.w = 2.0  # non-unit quaternion
    r = svc.update(req)
    assert not r.success and "quaternion" in r.message
    r = svc.update(_update_req(msgs, z, np.full((H // 2, W), 2.0)))
    assert not r.success and "CameraInfo says" in r.message
    r = svc.update(_update_req(msgs, z[:, :2], np.full((H, W), 2.0)))
    assert not r.success
    bad = _update_req(msgs, z, np.full((H, W), 2.0))
    bad.depth.encoding = "rgb8"
    r = svc.update(bad)
    assert not r.success and "depth" in r.message
    no_lat = _update_req(msgs, z, np.full((H, W), 2.0))
    no_lat.latent = msgs.new("mirage/msg/LatentTensor", dtype="float32")
    r = svc.update(no_lat)
    assert not r.success and "neither a latent nor an image" in r.message
    r = svc.read(msgs.new("mirage/srv/ReadMemory_Request",
                          camera_info=_camera_info(msgs, intrinsics_from_fov(W, H, 60.0))))
    assert not r.success and "at least one pose" in r.message
    distorted = _read_req(msgs, [torch.eye(4, dtype=torch.float64)])
    distorted.camera_info.d = np.array([0.1, 0, 0, 0, 0.0])
    r = svc.read(distorted)
    assert not r.success and "distortion" in r.message
    assert svc.memory.num_points == n


def test_a_reset_with_nothing_to_store_is_refused_and_keeps_the_memory(msgs):
    """A reset frame without one valid depth (NaN "no return" becomes 0) or entirely masked
    would leave an "initialized" empty memory: refused before anything is cleared."""
    svc = MemoryService(msgs)
    z = _latent()
    for depth, mask in ((np.full((H, W), np.nan), None),
                        (np.full((H, W), 2.0), np.ones((H, W), bool))):
        r = svc.update(_update_req(msgs, z, depth, reset=True, mask=mask))
        assert not r.success and "no cell to store" in r.message, r.message
        assert not svc.stats_msg().initialized and svc.memory.num_points == 0
    assert svc.update(_update_req(msgs, z, np.full((H, W), 2.0), reset=True)).success
    n = svc.memory.num_points
    r = svc.update(_update_req(msgs, z, np.zeros((H, W)), reset=True))
    assert not r.success and f"{n} of {n} latent cells without valid depth" in r.message
    assert svc.stats_msg().initialized and svc.memory.num_points == n  # nothing lost


def test_mask_keeps_cells_out(msgs):
    svc = MemoryService(msgs)
    mask = np.zeros((H, W), bool)
    mask[:16, :16] = True  # one latent cell
    r = svc.update(_update_req(msgs, _latent(), np.full((H, W), 2.0), reset=True, mask=mask))
    assert r.success and r.masked == 1 and r.added == (H // 16) * (W // 16) - 1


def test_autosave_survives_a_restart_and_file_service(msgs, tmp_path):
    path = tmp_path / "mem.safetensors"
    cfg = MemoryServiceConfig(autosave_path=str(path), feature_dtype="float32")
    svc = MemoryService(msgs, cfg)
    z = _latent(3)
    assert svc.update(_update_req(msgs, z, np.full((H, W), 2.0), reset=True)).success
    assert path.is_file()
    del svc  # "killed": a new node with the same parameters reloads the cache
    again = MemoryService(msgs, cfg)
    assert again.initialized and again.memory.num_points == (H // 16) * (W // 16)
    out = again.read(_read_req(msgs, [torch.eye(4, dtype=torch.float64)]))
    torch.testing.assert_close(latent_to_tensor(out.latents)[0], z)

    saved = tmp_path / "sub" / "copy.safetensors"
    F = "mirage/srv/MemoryFile_Request"
    assert again.file(msgs.new(F, operation="save", path=str(saved))).success
    assert again.clear().success and again.memory.num_points == 0
    r = again.file(msgs.new(F, operation="load", path=str(saved)))
    assert r.success and r.stats.num_points == (H // 16) * (W // 16)
    for op, p, why in (("load", str(tmp_path / "none"), "no memory file"),
                       ("erase", str(saved), "operation"), ("save", "", "empty")):
        r = again.file(msgs.new(F, operation=op, path=p))
        assert not r.success and why in r.message


def test_point_cloud_for_rviz(msgs):
    svc = MemoryService(msgs, MemoryServiceConfig(cloud_max_points=10))
    svc.update(_update_req(msgs, _latent(), np.full((H, W), 2.0), reset=True))
    pc = svc.point_cloud()
    assert pc.width == 10 and pc.point_step == 16 and len(pc.data) == 160
    assert [f.name for f in pc.fields] == ["x", "y", "z", "rgb"]
    xyz = np.frombuffer(bytes(pc.data), dtype="<f4").reshape(10, 4)[:, :3]
    np.testing.assert_allclose(xyz[:, 2], 2.0, rtol=1e-5)  # the plane at depth 2
    cols = pca_colours(torch.randn(50, C))
    assert cols.shape == (50, 3) and cols.dtype == np.uint8 and cols.std() > 0


def test_stride_follows_the_models_codec(msgs):
    """The small model's codec has stride 8 (8x12 latents at 64x96): the default memory (the
    5B VAE's stride 16) refuses its updates naming the stride; stride=8 takes them."""
    z = torch.randn((C, H // 8, W // 8), generator=torch.Generator().manual_seed(1))
    depth = np.full((H, W), 2.0)
    res = MemoryService(msgs, MemoryServiceConfig()).update(_update_req(msgs, z, depth,
                                                                         reset=True))
    assert not res.success and "stride 16" in res.message
    svc = MemoryService(msgs, MemoryServiceConfig(stride=8, feature_dtype="float32"))
    res = svc.update(_update_req(msgs, z, depth, reset=True))
    assert res.success, res.message
    assert res.added == (H // 8) * (W // 8)
    out = svc.read(_read_req(msgs, [torch.eye(4, dtype=torch.float64)]))
    torch.testing.assert_close(latent_to_tensor(out.latents)[0], z)


def test_hole_fill_parameter_fills_what_the_service_reads_out(msgs):
    """``hole_fill`` (the model's, set by mirage launch): the service's readout is the paper's
    readout with its holes filled (mirage_core/memory/hole_fill.py); bad values are refused."""
    from mirage_core.memory.hole_fill import fill_holes

    T = torch.eye(4, dtype=torch.float64)
    T[2, 3] = 0.8  # T_world_cam: closer to the plane, so its cells spread out and leave holes
    out = {}
    for fill in (0, 1):
        svc = MemoryService(msgs, MemoryServiceConfig(feature_dtype="float32", hole_fill=fill))
        assert svc.update(_update_req(msgs, _latent(), np.full((H, W), 2.0), reset=True)).success
        out[fill] = svc.read(_read_req(msgs, [T]))
        assert out[fill].success, out[fill].message
        st = svc.stats_msg()  # the stats say how the readouts were made
        assert st.hole_fill == fill and st.last_hole_rate == pytest.approx(
            out[fill].hole_rates[0])
    lat = {f: latent_to_tensor(o.latents) for f, o in out.items()}
    mask = {f: torch.from_numpy(image_to_array(o.masks[0]) > 0)[None] for f, o in out.items()}
    z, m, _, filled = fill_holes(lat[0], mask[0], torch.zeros(mask[0].shape), 1)
    assert filled.any() and out[1].hole_rates[0] < out[0].hole_rates[0]
    assert torch.equal(mask[1], m) and torch.equal(lat[1], z)
    for bad in (-1, True):
        with pytest.raises(ValueError, match="hole_fill"):
            MemoryServiceConfig(hole_fill=bad)
