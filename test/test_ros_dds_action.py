"""mirage_ros.dds: timers, deferred service replies and ROS 2 actions (rcl_action's protocol).

Real DDS, loopback only, each test in its own domain id (200..232, from the test name and pid;
232 is the largest valid DDS domain id).
Server and client live in separate contexts (participants) unless stated otherwise.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
import uuid
import zlib

import numpy as np
import pytest

pytest.importorskip("cyclonedds")
pytest.importorskip("rosbags")

from mirage_ros.dds import QOS_LATCHED, DdsContext
from mirage_ros.dds.action import (
    CancelReturnCode,
    ClientGoalHandle,
    GoalStatus,
    action_endpoint_names,
)
from mirage_ros.dds.names import dds_type_name
from mirage_ros.dds.typesupport import CDR_LE_HEADER, REQUEST_HEADER
from mirage_ros.interfaces import make_typestore
from mirage_ros.rosbags_types import default_message

ACTION = "mirage/action/Imagine"
ACTION_NAME = "/mirage/imagine"


def _domain(name: str) -> int:
    return 200 + zlib.crc32(f"{name}:{os.getpid()}".encode()) % 33


@pytest.fixture
def domain_id(request) -> int:
    """A domain id in 200..232 for this test and process."""
    return _domain(request.node.name)


@pytest.fixture(scope="module")
def ts():
    return make_typestore()


def _wait(pred, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def contexts(ts, domain_id):
    """``(server_ctx, client_ctx)`` on one domain, both spinning in a thread."""
    srv = DdsContext(domain_id, typestore=ts)
    cli = DdsContext(domain_id, typestore=ts)
    srv.spin_in_thread()
    cli.spin_in_thread()
    try:
        yield srv, cli
    finally:
        cli.shutdown()
        srv.shutdown()


# -- the test action server ---------------------------------------------------------------------
# Goal fields used as controls: steps = number of chunks; prompt = behaviour:
#   "" normal, "raise" raises after the first chunk, "no-state" returns without a terminal
#   state, "wait-cancel" runs until cancel is requested (at most 5 s).
def _execute(gh):
    goal = gh.request
    store = make_typestore()  # cached: the store the server's context uses
    fb = _default(store, f"{ACTION}_Feedback")
    result = _default(store, f"{ACTION}_Result")
    t0 = time.monotonic()
    n = goal.steps if goal.prompt != "wait-cancel" else 10**6
    done = 0
    for i in range(n):
        if gh.is_cancel_requested:
            gh.canceled()
            result.message, result.num_frames = "canceled", done
            return result
        if goal.prompt == "wait-cancel" and time.monotonic() - t0 > 5:
            break
        fb.chunk_index, fb.chunks_total, fb.frames_done = i, goal.steps, done + 1
        fb.progress = (i + 1) / max(1, goal.steps)
        gh.publish_feedback(fb)
        done += 1
        if goal.prompt == "raise":
            raise RuntimeError("generator exploded")
        time.sleep(0.01)
    if goal.prompt == "no-state":
        return result
    result.success, result.num_frames = True, done
    result.message, result.total_s = f"done:{goal.prompt}", time.monotonic() - t0
    gh.succeed()
    return result


def _goal(ts, steps=3, prompt=""):
    goal = _default(ts, f"{ACTION}_Goal")
    goal.steps, goal.prompt = steps, prompt
    return goal


def _default(ts, ros_type):
    return default_message(ts, ros_type)


def _server_and_client(contexts, **server_kw):
    srv_ctx, cli_ctx = contexts
    server = srv_ctx.create_node("imaginer", "/mirage").create_action_server(
        ACTION, "imagine", server_kw.pop("execute", _execute), **server_kw
    )
    client = cli_ctx.create_node("planner", "/mirage").create_action_client(ACTION, "imagine")
    assert client.wait_for_server(10), "action server never matched"
    return server, client


# -- actions ------------------------------------------------------------------------------------
def test_goal_feedback_in_order_and_result_succeeded(ts, contexts):
    server, client = _server_and_client(contexts)
    feedback = []
    handle = client.send_goal(_goal(ts, steps=5, prompt="p"), feedback.append)
    assert handle.accepted and handle.status == GoalStatus.STATUS_ACCEPTED
    assert len(handle.goal_uuid) == 16 and bytes(handle.goal_id.uuid) == handle.goal_uuid
    status, result = handle.get_result(timeout_sec=5)
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert result.__msgtype__ == f"{ACTION}_Result"
    assert result.success and result.num_frames == 5 and result.message == "done:p"
    assert handle.status == GoalStatus.STATUS_SUCCEEDED
    assert _wait(lambda: len(feedback) == 5), f"feedback: {len(feedback)} of 5"
    assert [f.feedback.chunk_index for f in feedback] == [0, 1, 2, 3, 4]
    assert all(bytes(f.goal_id.uuid) == handle.goal_uuid for f in feedback)
    assert feedback[-1].feedback.progress == pytest.approx(1.0)
    # the server's view of the same goal
    (gh,) = server.goal_handles
    assert gh.goal_uuid == handle.goal_uuid and gh.status == GoalStatus.STATUS_SUCCEEDED
    assert (gh.stamp.sec, gh.stamp.nanosec) == (handle.stamp.sec, handle.stamp.nanosec)
    assert abs(gh.stamp.sec + gh.stamp.nanosec * 1e-9 - time.time()) < 30
    # a second goal from the same client gets a new id
    h2 = client.send_goal(_goal(ts, steps=1))
    assert h2.goal_uuid != handle.goal_uuid
    assert h2.get_result(5)[0] == GoalStatus.STATUS_SUCCEEDED


def test_goal_rejected_by_goal_callback(ts, contexts):
    executed = []

    def execute(gh):
        executed.append(gh)
        return _execute(gh)

    _server, client = _server_and_client(
        contexts, execute=execute, goal_callback=lambda goal: goal.steps <= 10
    )
    handle = client.send_goal(_goal(ts, steps=11))
    assert not handle.accepted and handle.status == GoalStatus.STATUS_UNKNOWN
    with pytest.raises(RuntimeError, match="rejected"):
        handle.get_result(1)
    ok = client.send_goal(_goal(ts, steps=2))
    assert ok.accepted and ok.get_result(5)[0] == GoalStatus.STATUS_SUCCEEDED
    assert len(executed) == 1  # the rejected goal never executed


def test_cancel_mid_execution_and_cancel_codes(ts, contexts):
    cancel_asked = []

    def cancel_cb(gh):
        cancel_asked.append(gh.goal_uuid)
        return True

    _server, client = _server_and_client(contexts, cancel_callback=cancel_cb)
    feedback = []
    handle = client.send_goal(_goal(ts, steps=3, prompt="wait-cancel"), feedback.append)
    assert handle.accepted
    assert _wait(lambda: len(feedback) >= 2), "no feedback while executing"
    resp = handle.cancel_goal(timeout_sec=5)
    assert resp.return_code == CancelReturnCode.ERROR_NONE
    assert [bytes(g.goal_id.uuid) for g in resp.goals_canceling] == [handle.goal_uuid]
    assert cancel_asked == [handle.goal_uuid]
    t0 = time.monotonic()
    status, result = handle.get_result(5)
    assert time.monotonic() - t0 < 2  # the execute loop saw the request quickly
    assert status == GoalStatus.STATUS_CANCELED
    assert result.message == "canceled" and 0 < result.num_frames < 400
    # cancelling a finished goal, and an unknown one
    again = handle.cancel_goal(5)
    assert again.return_code == CancelReturnCode.ERROR_GOAL_TERMINATED
    assert len(again.goals_canceling) == 0
    unknown = client._cancel(uuid.uuid4().bytes, 0, 5)
    assert unknown.return_code == CancelReturnCode.ERROR_UNKNOWN_GOAL_ID
    # cancel-all with nothing active: no error, nothing canceling
    none = client.cancel_all_goals(5)
    assert none.return_code == CancelReturnCode.ERROR_NONE and len(none.goals_canceling) == 0
    assert len(cancel_asked) == 1


def test_cancel_all_and_refused_cancel(ts, contexts):
    refuse = {"on": True}
    _server, client = _server_and_client(contexts, cancel_callback=lambda gh: not refuse["on"])
    a = client.send_goal(_goal(ts, prompt="wait-cancel"))
    b = client.send_goal(_goal(ts, prompt="wait-cancel"))
    assert a.accepted and b.accepted
    refused = a.cancel_goal(5)
    assert refused.return_code == CancelReturnCode.ERROR_REJECTED
    assert len(refused.goals_canceling) == 0
    time.sleep(0.1)
    assert _wait(lambda: a.status == GoalStatus.STATUS_EXECUTING)  # still running
    refuse["on"] = False
    before_b = client.cancel_goals_before(a.stamp, 5)  # only goals accepted up to a's stamp
    assert before_b.return_code == CancelReturnCode.ERROR_NONE
    assert [bytes(g.goal_id.uuid) for g in before_b.goals_canceling] == [a.goal_uuid]
    assert a.get_result(5)[0] == GoalStatus.STATUS_CANCELED
    c = client.send_goal(_goal(ts, prompt="wait-cancel"))
    resp = client.cancel_all_goals(5)  # goal id zeros + stamp 0
    assert resp.return_code == CancelReturnCode.ERROR_NONE
    assert {bytes(g.goal_id.uuid) for g in resp.goals_canceling} == {b.goal_uuid, c.goal_uuid}
    assert b.get_result(5)[0] == GoalStatus.STATUS_CANCELED
    assert c.get_result(5)[0] == GoalStatus.STATUS_CANCELED


def test_execute_exception_aborts_and_server_keeps_serving(ts, contexts, caplog):
    _server, client = _server_and_client(contexts)
    with caplog.at_level(logging.WARNING, logger="mirage_ros.dds.action"):
        bad = client.send_goal(_goal(ts, steps=3, prompt="raise"))
        status, result = bad.get_result(5)
        assert status == GoalStatus.STATUS_ABORTED
        assert not result.success and result.num_frames == 0  # default result
        assert any(
            r.levelno == logging.ERROR and "generator exploded" in (r.exc_text or str(r.exc_info))
            for r in caplog.records
        )
        # returning without a terminal state: aborted, as rclpy does
        lazy = client.send_goal(_goal(ts, steps=1, prompt="no-state"))
        assert lazy.get_result(5)[0] == GoalStatus.STATUS_ABORTED
        assert any("assuming aborted" in r.getMessage() for r in caplog.records)
    good = client.send_goal(_goal(ts, steps=2))
    status, result = good.get_result(5)
    assert status == GoalStatus.STATUS_SUCCEEDED and result.num_frames == 2


def test_status_topic_content_and_result_expiry(ts, contexts, domain_id):
    _srv_ctx, cli_ctx = contexts
    server, client = _server_and_client(contexts, result_timeout_s=0.6)
    names = action_endpoint_names(ACTION_NAME)
    seen = []
    cli_ctx.create_node("watcher").create_subscription(
        "action_msgs/msg/GoalStatusArray", names["status"], seen.append, QOS_LATCHED.with_depth(50)
    )
    time.sleep(0.2)
    handle = client.send_goal(_goal(ts, steps=3))
    assert handle.get_result(5)[0] == GoalStatus.STATUS_SUCCEEDED
    # a late joiner gets the latest array (transient local, depth 1)
    with DdsContext(domain_id, typestore=ts) as late_ctx:
        late = []
        late_ctx.create_node("late").create_subscription(
            "action_msgs/msg/GoalStatusArray", names["status"], late.append, QOS_LATCHED
        )
        assert late_ctx.spin_until(lambda: late, 5), "no latched status"
    (st,) = late[-1].status_list
    assert bytes(st.goal_info.goal_id.uuid) == handle.goal_uuid
    assert (st.goal_info.stamp.sec, st.goal_info.stamp.nanosec) == (
        handle.stamp.sec,
        handle.stamp.nanosec,
    )
    assert st.status == GoalStatus.STATUS_SUCCEEDED
    # the live subscriber saw the goal move forward only, through EXECUTING
    assert _wait(lambda: seen and seen[-1].status_list[0].status == GoalStatus.STATUS_SUCCEEDED)
    codes = [s.status_list[0].status for s in seen if len(s.status_list)]
    assert codes == sorted(codes) and GoalStatus.STATUS_EXECUTING in codes
    assert handle.status == GoalStatus.STATUS_SUCCEEDED
    # after result_timeout_s the goal is forgotten: status list empty, result UNKNOWN
    assert _wait(lambda: not server.goal_handles, 3), "goal never expired"
    assert _wait(lambda: len(seen[-1].status_list) == 0, 3)
    fresh = ClientGoalHandle(client, handle.goal_uuid, True, handle.stamp)
    status, result = fresh.get_result(5)
    assert status == GoalStatus.STATUS_UNKNOWN and not result.success


def test_graph_lists_action_endpoints_and_destroy(ts, contexts):
    srv_ctx, _cli_ctx = contexts
    server, client = _server_and_client(contexts)
    snode, cnode = server.node, client.node
    # server: 3 request readers; 3 reply writers + feedback + status writers
    assert len(snode.reader_guids()) == 3 and len(snode.writer_guids()) == 5
    # client: 3 reply readers + feedback + status readers; 3 request writers
    assert len(cnode.reader_guids()) == 5 and len(cnode.writer_guids()) == 3
    info = srv_ctx._graph.message()
    (n,) = info.node_entities_info_seq
    assert (n.node_namespace, n.node_name) == ("/mirage", "imaginer")
    assert len(n.reader_gid_seq) == 3 and len(n.writer_gid_seq) == 5
    snode.destroy_node()
    assert server._destroyed and snode.action_servers == [] and snode.timers == []
    assert _wait(lambda: not client.server_is_ready()), "server endpoints still matched"
    client.destroy()
    assert cnode.clients == [] and cnode.subscriptions == [] and cnode.action_clients == []


def test_goal_handle_state_machine_refuses_invalid_transitions(ts, contexts):
    errors = []

    def execute(gh):
        try:
            gh.canceled()  # EXECUTING -> CANCELED is not a transition (only from CANCELING)
        except RuntimeError as e:
            errors.append(str(e))
        gh.succeed()
        try:
            gh.abort()  # terminal: no way out
        except RuntimeError as e:
            errors.append(str(e))
        return _default(ts, f"{ACTION}_Result")

    _server, client = _server_and_client(contexts, execute=execute)
    assert client.send_goal(_goal(ts)).get_result(5)[0] == GoalStatus.STATUS_SUCCEEDED
    assert len(errors) == 2 and "EXECUTING" in errors[0] and "SUCCEEDED" in errors[1]


# -- wire -----------------------------------------------------------------------------------------
def test_action_wire_names_types_and_request_bytes(ts, contexts, domain_id):
    """What a ROS 2 peer sees: DDS topic and type names of all endpoints (from DDS discovery),
    and the bytes of a SendGoal request (header, goal id, goal)."""
    from cyclonedds.builtin import (
        BuiltinDataReader,
        BuiltinTopicDcpsPublication,
        BuiltinTopicDcpsSubscription,
    )
    from cyclonedds.sub import DataReader

    from mirage_ros.dds.node import _take

    _server, client = _server_and_client(contexts)
    with DdsContext(domain_id, typestore=ts, publish_graph=False) as spy:
        pubs = BuiltinDataReader(spy.participant, BuiltinTopicDcpsPublication)
        subs = BuiltinDataReader(spy.participant, BuiltinTopicDcpsSubscription)
        expected_writers = {  # client and server writers
            "rq/mirage/imagine/_action/send_goalRequest": "Imagine_SendGoal_Request_",
            "rq/mirage/imagine/_action/cancel_goalRequest": None,
            "rq/mirage/imagine/_action/get_resultRequest": "Imagine_GetResult_Request_",
            "rr/mirage/imagine/_action/send_goalReply": "Imagine_SendGoal_Response_",
            "rr/mirage/imagine/_action/cancel_goalReply": None,
            "rr/mirage/imagine/_action/get_resultReply": "Imagine_GetResult_Response_",
            "rt/mirage/imagine/_action/feedback": "Imagine_FeedbackMessage_",
            "rt/mirage/imagine/_action/status": None,
        }
        found: dict[str, str] = {}
        sub_found: dict[str, str] = {}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            len(found) < len(expected_writers) or len(sub_found) < len(expected_writers)
        ):
            for s in pubs.take(N=100):
                if "_action/" in s.topic_name:
                    found[s.topic_name] = s.type_name
            for s in subs.take(N=100):
                if "_action/" in s.topic_name:
                    sub_found[s.topic_name] = s.type_name
            time.sleep(0.02)
        assert set(found) == set(expected_writers)
        assert sub_found == found  # every topic is read by the other side with the same type
        for topic, short in expected_writers.items():
            if short is not None:
                assert found[topic] == f"mirage::action::dds_::{short}"
        assert found["rq/mirage/imagine/_action/cancel_goalRequest"] == (
            "action_msgs::srv::dds_::CancelGoal_Request_"
        )
        assert found["rr/mirage/imagine/_action/cancel_goalReply"] == (
            "action_msgs::srv::dds_::CancelGoal_Response_"
        )
        assert found["rt/mirage/imagine/_action/status"] == (
            "action_msgs::msg::dds_::GoalStatusArray_"
        )
        assert dds_type_name(f"{ACTION}_SendGoal_Request") == (
            "mirage::action::dds_::Imagine_SendGoal_Request_"
        )

        # the raw SendGoal request, read by a third party on the request topic
        req_type = f"{ACTION}_SendGoal_Request"
        topic = spy._topic(
            "rq/mirage/imagine/_action/send_goalRequest", spy.types.idl_class(req_type, True)
        )
        writer = client._goal_client.request_writer
        raw_reader = DataReader(spy.participant, topic, writer.get_qos())
        assert _wait(lambda: writer.get_publication_matched_status().current_count >= 2)
        goal = _goal(ts, steps=2, prompt="wire")
        goal_uuid = bytes(range(16))
        handle = client.send_goal(goal, goal_uuid=goal_uuid)
        assert handle.goal_uuid == goal_uuid
        assert handle.get_result(5)[0] == GoalStatus.STATUS_SUCCEEDED
        samples: list = []
        assert _wait(lambda: bool(samples.extend(_take(raw_reader)) or samples), 5)
        data = bytes(samples[0][0])
        req = _default(ts, req_type)
        req.goal_id.uuid[:] = np.frombuffer(goal_uuid, dtype=np.uint8)
        req.goal = goal
        body = bytes(ts.serialize_cdr(req, req_type, little_endian=True))
        assert data[:4] == CDR_LE_HEADER
        guid, seq = REQUEST_HEADER.unpack_from(data, 4)
        assert guid == client._goal_client.guid and seq >= 1
        assert data[20:].rstrip(b"\0") == body[4:].rstrip(b"\0")
        assert data[20:36] == goal_uuid  # UUID first, right after the request header


# -- two processes --------------------------------------------------------------------------------
def _action_server_proc(domain_id: int, done) -> None:
    store = make_typestore()
    with DdsContext(domain_id, typestore=store) as ctx:
        ctx.create_node("imaginer", "/mirage").create_action_server(ACTION, "imagine", _execute)
        while not done.is_set():
            ctx.spin_once(0.05)


def test_action_between_processes(ts, domain_id):
    spawn = mp.get_context("spawn")
    done = spawn.Event()
    child = spawn.Process(target=_action_server_proc, args=(domain_id, done))
    child.start()
    try:
        with DdsContext(domain_id, typestore=ts) as ctx:
            client = ctx.create_node("planner", "/mirage").create_action_client(ACTION, "imagine")
            assert client.wait_for_server(20), "server process never appeared"
            ctx.spin_in_thread()
            feedback = []
            handle = client.send_goal(_goal(ts, steps=4, prompt="x"), feedback.append)
            assert handle.accepted
            status, result = handle.get_result(10)
            assert status == GoalStatus.STATUS_SUCCEEDED
            assert result.num_frames == 4 and result.message == "done:x"
            assert _wait(lambda: len(feedback) == 4)
            assert [f.feedback.chunk_index for f in feedback] == [0, 1, 2, 3]
            h2 = client.send_goal(_goal(ts, prompt="wait-cancel"))
            assert h2.cancel_goal(5).return_code == CancelReturnCode.ERROR_NONE
            assert h2.get_result(5)[0] == GoalStatus.STATUS_CANCELED
    finally:
        done.set()
        child.join(20)
    assert child.exitcode == 0


# -- timers ---------------------------------------------------------------------------------------
def test_timer_rate_cancel_reset_and_destroy(ts, domain_id):
    with DdsContext(domain_id, typestore=ts) as ctx:
        node = ctx.create_node("ticker")
        calls = []
        timer = node.create_timer(0.05, lambda: calls.append(time.monotonic()))
        assert timer.timer_period_ns == 50_000_000 and not timer.is_canceled()
        t0 = time.monotonic()
        ctx.spin(0.52)
        n = len(calls)
        assert 8 <= n <= 11, f"{n} calls in 0.52 s at 20 Hz"
        assert calls[0] - t0 >= 0.045  # first call one period after creation
        gaps = np.diff(calls)
        assert np.median(gaps) == pytest.approx(0.05, abs=0.01)
        timer.cancel()
        assert timer.is_canceled() and timer.time_until_next_call() is None
        ctx.spin(0.3)
        assert len(calls) == n  # no calls while canceled
        timer.reset()
        ctx.spin(0.17)
        assert len(calls) in (n + 2, n + 3, n + 4)
        assert node.destroy_timer(timer) and not node.destroy_timer(timer)
        m = len(calls)
        ctx.spin(0.2)
        assert len(calls) == m
        # destroyed with its node
        t2 = node.create_timer(0.02, lambda: calls.append(0.0))
        node.destroy_node()
        ctx.spin(0.15)
        assert len(calls) == m and t2.is_canceled()


def test_timer_wakes_a_waiting_spin_and_skips_missed_periods(ts, domain_id):
    with DdsContext(domain_id, typestore=ts) as ctx:
        node = ctx.create_node("ticker")
        # spin_once waits only until the next due timer, not its full timeout
        t = node.create_timer(0.1, lambda: None)
        t0 = time.monotonic()
        assert ctx.spin_once(5.0) == 1
        assert 0.08 <= time.monotonic() - t0 < 0.5
        node.destroy_timer(t)
        # a timer created while another thread waits in spin_once(long) wakes it
        stop = threading.Event()
        fired = []

        def spinner():
            while not stop.is_set():
                ctx.spin_once(10.0)

        th = threading.Thread(target=spinner, daemon=True)
        th.start()
        time.sleep(0.2)  # the spinner now waits with a 10 s timeout
        t_create = time.monotonic()
        t = node.create_timer(0.05, lambda: fired.append(time.monotonic()))
        assert _wait(lambda: fired, 2), "the waiting spin did not wake for the new timer"
        assert fired[0] - t_create < 0.5
        # a slow callback does not cause a burst of catch-up calls
        slow = {"left": 1}
        starts = []

        def cb():
            starts.append(time.monotonic())
            if slow["left"]:
                slow["left"] -= 1
                time.sleep(0.35)  # 7 periods

        node.destroy_timer(t)
        node.create_timer(0.05, cb)
        assert _wait(lambda: len(starts) >= 6, 3)
        stop.set()
        ctx._wake()
        th.join(5)
        first_after = [s for s in starts if starts[0] + 0.35 <= s < starts[0] + 0.35 + 0.04]
        assert len(first_after) <= 1, f"burst of {len(first_after)} catch-up calls"
        gaps = np.diff(starts[1:6])
        assert gaps.min() > 0.02, f"calls too close: {gaps}"


# -- deferred service replies -------------------------------------------------------------------
def test_deferred_reply_from_another_thread(ts, contexts):
    srv_ctx, cli_ctx = contexts
    pending = []
    got = threading.Event()

    def handler(request, response, reply):
        pending.append((request, response, reply))
        if len(pending) == 2:
            got.set()
        return None  # answer later

    srv = srv_ctx.create_node("files").create_service(
        "mirage/srv/MemoryFile", "memory_file", handler, deferred=True
    )
    assert srv.deferred
    cli = cli_ctx.create_node("user").create_client("mirage/srv/MemoryFile", "/memory_file")
    assert cli.wait_for_service(10)
    results = {}

    def call(path):
        req = cli.default_request()
        req.operation, req.path = "save", path
        results[path] = cli.call(req, timeout_sec=5)

    callers = [threading.Thread(target=call, args=(p,)) for p in ("a.st", "b.st")]
    for c in callers:
        c.start()
        time.sleep(0.05)
    assert got.wait(5), "requests did not reach the deferred handler"
    assert not results  # nothing answered yet, and the spin thread is free

    def answer_all():  # another thread answers, in reverse order
        for request, response, reply in reversed(pending):
            time.sleep(0.05)
            response.success, response.message = True, f"saved {request.path}"
            assert reply.send(response)

    answerer = threading.Thread(target=answer_all)
    answerer.start()
    answerer.join(5)
    for c in callers:
        c.join(5)
    assert {p: r.message for p, r in results.items()} == {
        "a.st": "saved a.st",
        "b.st": "saved b.st",
    }
    _, response, reply = pending[0]
    assert reply.sent
    with pytest.raises(RuntimeError, match="already sent"):
        reply.send(response)


def test_deferred_handler_may_answer_at_once_and_type_is_checked(ts, contexts):
    srv_ctx, cli_ctx = contexts
    replies = []

    def handler(request, response, reply):
        if request.operation == "now":
            response.message = "now"
            return response
        replies.append(reply)
        return None

    srv_ctx.create_node("files").create_service(
        "mirage/srv/MemoryFile", "memory_file", handler, deferred=True
    )
    cli = cli_ctx.create_node("user").create_client("mirage/srv/MemoryFile", "/memory_file")
    assert cli.wait_for_service(10)
    req = cli.default_request()
    req.operation = "now"
    assert cli.call(req, 5).message == "now"
    req.operation = "later"
    with pytest.raises(TimeoutError):
        cli.call(req, 0.3)  # never answered: the client times out
    assert len(replies) == 1
    with pytest.raises(TypeError):
        replies[0].send(req)  # a request is not a response
    assert not replies[0].sent


def test_destroying_a_client_interrupts_a_blocked_call(ts, contexts):
    srv_ctx, cli_ctx = contexts
    srv_ctx.create_node("files").create_service(
        "mirage/srv/MemoryFile", "memory_file", lambda req, resp, reply: None, deferred=True
    )
    node = cli_ctx.create_node("user")
    cli = node.create_client("mirage/srv/MemoryFile", "/memory_file")
    assert cli.wait_for_service(10)
    errors = []

    def call():
        try:
            cli.call(cli.default_request(), timeout_sec=None)
        except RuntimeError as e:
            errors.append(e)

    th = threading.Thread(target=call)
    th.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert node.destroy_client(cli)
    th.join(2)
    assert not th.is_alive() and len(errors) == 1 and "destroyed" in str(errors[0])
    assert time.monotonic() - t0 < 1.5
