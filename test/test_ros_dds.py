"""mirage_ros.dds: ROS 2 wire protocol over Cyclone DDS, without rclpy.

Real DDS, loopback only (the loopback configuration of ``mirage_ros.dds.config``), each test in
its own domain id (100..199, from the test name and pid) so tests may run in parallel.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("cyclonedds")
pytest.importorskip("rosbags")

from mirage_ros.dds import (
    QOS_LATCHED,
    QOS_RELIABLE,
    DdsContext,
    TypeSupport,
    typestore_with,
)
from mirage_ros.dds.names import (
    dds_type_name,
    resolve_name,
    service_reply_topic,
    service_request_topic,
    topic_dds_name,
)
from mirage_ros.dds.typesupport import CDR_LE_HEADER, REQUEST_HEADER

BLOB_MSG = """# custom type: float32[] and uint8[] and nested arrays
std_msgs/Header header
float32[] values
uint8[] data
uint32[] shape
geometry_msgs/Point[2] corners
geometry_msgs/Pose[] poses
string<=8 tag
int8[] signed
bool[3] flags
byte[] raw
char letter
float64[<=4] bounded
string[] names
"""
ADD_SRV = "int64 a\nint64 b\nstring label\n---\nint64 sum\nstring label\nuint8[] echo\n"
TYPES = {"msgs": {"mirage_test/msg/Blob": BLOB_MSG}, "srvs": {"mirage_test/srv/Add": ADD_SRV}}


def _domain(name: str) -> int:
    return 100 + zlib.crc32(f"{name}:{os.getpid()}".encode()) % 100


@pytest.fixture
def domain_id(request) -> int:
    """A domain id in 100..199 for this test and process."""
    return _domain(request.node.name)


@pytest.fixture(scope="module")
def ts():
    return typestore_with(**TYPES)


# -- messages used on both sides of the process tests (deterministic) --------------------------
def _header(store, sec=7, frame="cam_optical"):
    t = store.types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=123), frame_id=frame
    )


def make_image(store, size=4 * 1024 * 1024, seed=0):
    width = 1024
    height = size // (4 * width)
    data = np.random.default_rng(seed).integers(0, 256, height * width * 4, dtype=np.uint8)
    return store.types["sensor_msgs/msg/Image"](
        header=_header(store),
        height=height,
        width=width,
        encoding="rgba8",
        is_bigendian=0,
        step=4 * width,
        data=data,
    )


def make_camera_info(store):
    ci = TypeSupport(store).default("sensor_msgs/msg/CameraInfo")
    ci.header = _header(store)
    ci.height, ci.width, ci.distortion_model = 704, 1280, "plumb_bob"
    ci.d = np.array([0.1, -0.05, 0.001, 0.002, 0.0])
    ci.k[:] = [600.0, 0, 640.0, 0, 600.0, 352.0, 0, 0, 1]
    ci.p[:] = [600.0, 0, 640.0, 0, 0, 600.0, 352.0, 0, 0, 0, 1, 0]
    ci.r[:] = np.eye(3).ravel()
    return ci


def make_pose_stamped(store, x=1.0):
    t = store.types
    pose = t["geometry_msgs/msg/Pose"](
        position=t["geometry_msgs/msg/Point"](x=x, y=-2.0, z=3.5),
        orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.6, z=0.0, w=0.8),
    )
    return t["geometry_msgs/msg/PoseStamped"](header=_header(store), pose=pose)


def make_path(store, n=7):
    poses = [make_pose_stamped(store, x=float(i)) for i in range(n)]
    return store.types["nav_msgs/msg/Path"](header=_header(store, frame="map"), poses=poses)


def make_blob(store):
    ts_ = TypeSupport(store)
    b = ts_.default("mirage_test/msg/Blob")
    t = store.types
    b.header = _header(store)
    b.values = np.linspace(-1, 1, 11, dtype=np.float32)
    b.data = np.arange(1001, dtype=np.uint32).astype(np.uint8)
    b.shape = np.array([48, 44, 80], dtype=np.uint32)
    b.corners = [
        t["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=3.0),
        t["geometry_msgs/msg/Point"](x=-1.0, y=0.5, z=9.0),
    ]
    b.poses = [make_pose_stamped(store, x=float(i)).pose for i in range(3)]
    b.tag = "lat"
    b.signed = np.array([-128, 0, 127], dtype=np.int8)
    b.flags = np.array([True, False, True])
    b.raw = np.array([0, -1, 7], dtype=np.int8)  # rosbags: byte -> numpy int8
    b.letter = ord("M")
    b.bounded = np.array([0.5, 1.5])
    b.names = ["a", "", "xyz"]
    return b


CASES = {
    "sensor_msgs/msg/Image": make_image,
    "sensor_msgs/msg/CameraInfo": make_camera_info,
    "geometry_msgs/msg/PoseStamped": make_pose_stamped,
    "nav_msgs/msg/Path": make_path,
    "mirage_test/msg/Blob": make_blob,
}


def _assert_msg_equal(a, b, path="msg"):
    """Field-by-field equality of two rosbags messages (numpy arrays compared exactly)."""
    if hasattr(a, "__dataclass_fields__"):
        assert a.__msgtype__ == b.__msgtype__, path
        for f in a.__dataclass_fields__:
            if f != "__msgtype__":
                _assert_msg_equal(getattr(a, f), getattr(b, f), f"{path}.{f}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == np.asarray(b).dtype and np.array_equal(a, b), path
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_msg_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


# -- names ------------------------------------------------------------------------------------
def test_names_follow_rmw_cyclonedds():
    assert resolve_name("image", "/mirage/cam") == "/mirage/cam/image"
    assert resolve_name("/tf", "/mirage") == "/tf"
    assert resolve_name("~/state", "/m", "memory") == "/m/memory/state"
    assert resolve_name("image", "/") == "/image"
    assert topic_dds_name("/foo/bar") == "rt/foo/bar"
    assert service_request_topic("/mirage/read") == "rq/mirage/readRequest"
    assert service_reply_topic("/mirage/read") == "rr/mirage/readReply"
    assert dds_type_name("sensor_msgs/msg/Image") == "sensor_msgs::msg::dds_::Image_"
    assert (
        dds_type_name("mirage/srv/ReadMemory_Request") == "mirage::srv::dds_::ReadMemory_Request_"
    )
    with pytest.raises(ValueError):
        resolve_name("bad name", "/")


# -- wire bytes -------------------------------------------------------------------------------
@pytest.mark.parametrize("ros_type", list(CASES))
def test_wire_bytes_identical_to_rosbags(ts, ros_type):
    """The DDS struct declared for a type serialises to exactly rosbags' (= ROS 2's) CDR bytes,
    and what the transport writes is those bytes (padded to 4) and decodes back."""
    types = TypeSupport(ts)
    msg = CASES[ros_type](ts)
    ref = bytes(ts.serialize_cdr(msg, ros_type, little_endian=True))
    idl_cls = types.idl_class(ros_type)
    assert idl_cls.__idl_typename__ == dds_type_name(ros_type)
    dds_bytes = types.to_idl(msg).serialize(use_version_2=False)
    assert dds_bytes[:4] == CDR_LE_HEADER  # final struct, plain CDR (XCDR1), little endian
    assert dds_bytes == ref
    payload = bytes(types.encode(msg, ros_type))
    assert payload[: len(ref)] == ref and len(payload) % 4 == 0
    assert payload[len(ref) :] == b"\0" * (len(payload) - len(ref))
    _assert_msg_equal(types.decode(payload, ros_type), msg)


def test_nested_dds_type_names(ts):
    types = TypeSupport(ts)
    cls = types.idl_class("nav_msgs/msg/Path")
    hints = cls.__annotations__
    assert hints["header"].__idl_typename__ == "std_msgs::msg::dds_::Header_"
    stamp = hints["header"].__annotations__["stamp"]
    assert stamp.__idl_typename__ == "builtin_interfaces::msg::dds_::Time_"


def test_service_payload_has_request_header(ts):
    """Service samples: encapsulation, {uint64 guid; int64 seq}, then the request body; the
    DDS struct with the header fields serialises to the same bytes."""
    types = TypeSupport(ts)
    req = types.default("mirage_test/srv/Add_Request")
    req.a, req.b, req.label = 2, 40, "x"
    guid, seq = 0xF00D_0000_0000_0001, 42
    payload = bytes(types.encode(req, "mirage_test/srv/Add_Request", (guid, seq)))
    body = bytes(ts.serialize_cdr(req, "mirage_test/srv/Add_Request", little_endian=True))
    assert payload[:4] == CDR_LE_HEADER
    assert REQUEST_HEADER.unpack_from(payload, 4) == (guid, seq)
    assert payload[20 : 20 + len(body) - 4] == body[4:]
    cls = types.idl_class("mirage_test/srv/Add_Request", request_header=True)
    assert cls.__idl_typename__ == "mirage_test::srv::dds_::Add_Request_"
    idl = cls(_rmw_guid=guid, _rmw_seq=seq, a=2, b=40, label="x")
    assert payload.startswith(idl.serialize(use_version_2=False))
    back, g, s = types.decode_with_header(payload, "mirage_test/srv/Add_Request")
    assert (g, s) == (guid, seq)
    _assert_msg_equal(back, req)


def test_empty_service_part_gets_placeholder_field(ts):
    from mirage_ros.dds import register_srv

    register_srv(ts, "mirage_test/srv/Ping", "---\nbool ok\n")
    types = TypeSupport(ts)
    req = types.default("mirage_test/srv/Ping_Request")
    assert req.structure_needs_at_least_one_member == 0
    assert bytes(types.encode(req, "mirage_test/srv/Ping_Request"))[:5] == CDR_LE_HEADER + b"\0"


def test_malformed_payload_refused_by_libddsc(domain_id):
    """libddsc validates every written sample against the declared type."""
    from cyclonedds.core import DDSException

    from mirage_ros.dds.node import _write

    with DdsContext(domain_id) as ctx:
        pub = ctx.create_node("w").create_publisher("sensor_msgs/msg/Image", "img", QOS_RELIABLE)
        with pytest.raises(DDSException):
            _write(pub.writer, CDR_LE_HEADER + b"\xff" * 64)


# -- two processes ----------------------------------------------------------------------------
def _image_publisher_proc(domain_id: int, ready, done) -> None:
    """Child: publish the test Image (reliable) and CameraInfo (latched) once ``ready`` is set."""
    store = typestore_with(**TYPES)
    with DdsContext(domain_id, typestore=store) as ctx:
        node = ctx.create_node("camera", namespace="/sim")
        img_pub = node.create_publisher(
            "sensor_msgs/msg/Image", "image", QOS_RELIABLE.with_depth(1)
        )
        info_pub = node.create_publisher("sensor_msgs/msg/CameraInfo", "camera_info", QOS_LATCHED)
        if not (ready.wait(20) and img_pub.wait_for_subscribers(1, 20)):
            return
        info_pub.publish(make_camera_info(store))
        img_pub.publish(make_image(store))
        done.wait(20)


def test_pubsub_image_and_camera_info_between_processes(ts, domain_id):
    spawn = mp.get_context("spawn")
    ready, done = spawn.Event(), spawn.Event()
    child = spawn.Process(target=_image_publisher_proc, args=(domain_id, ready, done))
    child.start()
    try:
        with DdsContext(domain_id, typestore=ts) as ctx:
            node = ctx.create_node("viewer", namespace="/sim")
            images, infos = [], []
            s_img = node.create_subscription(
                "sensor_msgs/msg/Image", "image", images.append, QOS_RELIABLE.with_depth(1)
            )
            s_info = node.create_subscription(
                "sensor_msgs/msg/CameraInfo", "/sim/camera_info", infos.append, QOS_LATCHED
            )
            assert s_img.wait_for_publishers(1, 20) and s_info.wait_for_publishers(1, 20)
            ready.set()
            assert ctx.spin_until(lambda: images and infos, 20), "nothing received"
            done.set()
            _assert_msg_equal(images[0], make_image(ts))
            _assert_msg_equal(infos[0], make_camera_info(ts))
            assert images[0].data.nbytes == 4 * 1024 * 1024
    finally:
        done.set()
        child.join(20)
    assert child.exitcode == 0


def _add_handler(request, response):
    response.sum = request.a + request.b
    response.label = request.label.upper()
    response.echo = np.frombuffer(request.label.encode(), dtype=np.uint8)
    return response


def _service_proc(domain_id: int, done) -> None:
    store = typestore_with(**TYPES)
    with DdsContext(domain_id, typestore=store) as ctx:
        ctx.create_node("adder", namespace="/math").create_service(
            "mirage_test/srv/Add", "add", _add_handler
        )
        while not done.is_set():
            ctx.spin_once(0.05)


def test_service_call_between_processes_and_timeout(ts, domain_id):
    spawn = mp.get_context("spawn")
    done = spawn.Event()
    child = spawn.Process(target=_service_proc, args=(domain_id, done))
    child.start()
    try:
        with DdsContext(domain_id, typestore=ts) as ctx:
            node = ctx.create_node("caller", namespace="/math")
            cli = node.create_client("mirage_test/srv/Add", "add")
            assert cli.wait_for_service(20), "service never appeared"
            for i in range(3):
                req = cli.default_request()
                req.a, req.b, req.label = i, 40, f"call{i}"
                resp = cli.call(req, timeout_sec=5.0)
                assert resp.sum == i + 40 and resp.label == f"CALL{i}"
                assert bytes(resp.echo) == f"call{i}".encode()
            missing = node.create_client("mirage_test/srv/Add", "/math/nobody")
            assert not missing.wait_for_service(0.2)
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                missing.call(cli.default_request(), timeout_sec=0.3)
            assert 0.25 < time.monotonic() - t0 < 2.0
    finally:
        done.set()
        child.join(20)
    assert child.exitcode == 0


# -- isolation, latching, graph ---------------------------------------------------------------
def test_two_domains_do_not_see_each_other(domain_id):
    other = 100 + (domain_id - 100 + 50) % 100
    with DdsContext(domain_id) as a, DdsContext(other) as b, DdsContext(domain_id) as a2:
        pub = a.create_node("p").create_publisher("std_msgs/msg/String", "chatter", QOS_RELIABLE)
        got_b, got_a2 = [], []
        b.create_node("s").create_subscription(
            "std_msgs/msg/String", "chatter", got_b.append, QOS_RELIABLE
        )
        a2.create_node("s").create_subscription(
            "std_msgs/msg/String", "chatter", got_a2.append, QOS_RELIABLE
        )
        assert pub.wait_for_subscribers(1, 10)  # the same-domain reader (positive control)
        pub.publish(a.msg_class("std_msgs/msg/String")(data="hello"))
        assert a2.spin_until(lambda: got_a2, 5)
        b.spin_once(0.5)
        time.sleep(0.5)
        assert pub.get_subscription_count() == 1
        b.spin_once(0.1)
        assert got_b == [] and got_a2[0].data == "hello"


def test_latched_sample_reaches_late_subscriber(domain_id):
    with DdsContext(domain_id) as a, DdsContext(domain_id) as b:
        pub = a.create_node("cam").create_publisher("std_msgs/msg/String", "info", QOS_LATCHED)
        pub.publish(a.msg_class("std_msgs/msg/String")(data="static"))
        got = []
        b.create_node("late").create_subscription(
            "std_msgs/msg/String", "/info", got.append, QOS_LATCHED
        )
        assert b.spin_until(lambda: got, 10)
        assert got[0].data == "static"


def test_destroy_node_unmatches_its_endpoints(ts, domain_id):
    with DdsContext(domain_id, typestore=ts) as a, DdsContext(domain_id, typestore=ts) as b:
        node = a.create_node("gone")
        node.create_publisher("std_msgs/msg/String", "chatter", QOS_RELIABLE)
        node.create_subscription("std_msgs/msg/String", "cmd", print, QOS_RELIABLE)
        node.create_service("mirage_test/srv/Add", "add", _add_handler)
        node.create_client("mirage_test/srv/Add", "other")
        stay = b.create_node("stay")
        sub = stay.create_subscription("std_msgs/msg/String", "chatter", print, QOS_RELIABLE)
        cli = stay.create_client("mirage_test/srv/Add", "add")
        assert sub.wait_for_publishers(1, 10) and cli.wait_for_service(10)
        node.destroy_node()
        assert a.nodes == [] and node.publishers == [] and node.services == []
        assert _wait(lambda: sub.get_publisher_count() == 0 and not cli.service_is_ready())
        a.spin_once(0.01)  # the context still spins without the node's handlers


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_ros_discovery_info_lists_nodes(domain_id):
    """The graph message on the DDS topic ``ros_discovery_info`` (read raw, as ROS 2 does)."""
    from cyclonedds.sub import DataReader

    from mirage_ros.dds.discovery import DISCOVERY_TOPIC
    from mirage_ros.dds.node import _take

    info_type = "rmw_dds_common/msg/ParticipantEntitiesInfo"
    with DdsContext(domain_id) as a, DdsContext(domain_id, publish_graph=False) as b:
        node = a.create_node("memory", namespace="/mirage")
        node.create_publisher("std_msgs/msg/String", "stats", QOS_LATCHED)
        node.create_subscription("std_msgs/msg/String", "cmd", print, QOS_RELIABLE)
        topic = b._topic(DISCOVERY_TOPIC, b.types.idl_class(info_type))
        reader = DataReader(b.participant, topic, QOS_LATCHED.to_dds())
        deadline = time.monotonic() + 10
        latest = None
        while time.monotonic() < deadline:
            for data, _info in _take(reader):
                latest = b.types.decode(data, info_type)
            if (
                latest is not None
                and latest.node_entities_info_seq
                and len(latest.node_entities_info_seq[0].reader_gid_seq)
            ):
                break
            time.sleep(0.02)
        assert latest is not None, "no ros_discovery_info received"
        assert bytes(latest.gid.data[:16]) == a.participant.guid.bytes
        (n,) = latest.node_entities_info_seq
        assert (n.node_namespace, n.node_name) == ("/mirage", "memory")
        assert len(n.writer_gid_seq) == 1 and len(n.reader_gid_seq) == 1
        assert bytes(n.writer_gid_seq[0].data[:16]) == node.publishers[0].writer.guid.bytes


# -- latency ----------------------------------------------------------------------------------
def test_4mb_image_latency_between_processes(domain_id, capsys):
    from mirage_ros.dds.bench_latency import run_bench

    r = run_bench(n=10, domain_id=domain_id, timeout_s=60)
    with capsys.disabled():
        print(
            f"\n4 MiB Image loopback: one-way median {r['one_way_ms']:.2f} ms, "
            f"round trip median {r['round_trip_ms']:.2f} ms (target one-way < 10 ms)"
        )
    assert r["bytes"] == 4 * 1024 * 1024
    assert r["one_way_ms"] < 1000 and r["round_trip_ms"] < 1000
