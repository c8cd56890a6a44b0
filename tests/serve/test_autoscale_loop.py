"""The local autoscaling loop of `disagg serve`, with a fake actuator and fake metrics."""

from __future__ import annotations

import argparse

import pytest
from disagg_operator.local_autoscaler import LocalAutoscaler, LocalPools
from disagg_operator.metrics_source import PodTarget
from disagg_operator.policy import AutoscalingSettings, Observation, PoolConfig
from disagg_worker import serve_autoscale
from disagg_worker.cli import main


class FakeActuator:
    """Pools as counts; every replica is ready at once; `scale` records its calls."""

    def __init__(self, prefill: int, decode: int, fail_scale: bool = False) -> None:
        self.replicas = {"prefill": prefill, "decode": decode}
        self.calls: list[tuple[str, int]] = []
        self.fail_scale = fail_scale

    def current_replicas(self, role: str) -> int:
        return self.replicas[role]

    def ready_targets(self, role: str) -> list[PodTarget]:
        return [
            PodTarget(f"{role}[{index}]", "127.0.0.1", 9000 + index, role)
            for index in range(self.replicas[role])
        ]

    def router_target(self) -> PodTarget:
        return PodTarget("router", "127.0.0.1", 8000, "router")

    def scale(self, role: str, replicas: int) -> None:
        self.calls.append((role, replicas))
        if self.fail_scale:
            raise OSError("cannot start process")
        self.replicas[role] = replicas


class FakeSource:
    """Load per replica name as (queue depth, in flight); a name absent reads as missing."""

    def __init__(self) -> None:
        self.load: dict[str, tuple[int, int]] = {}
        self.router_total: float | None = 0.0

    async def observe(self, pods, now):
        observations = {}
        for pod in pods:
            load = self.load.get(pod.name)
            observations[pod.name] = (
                None if load is None else Observation(pod.name, load[0], load[1], now)
            )
        return observations

    async def local_prefill_totals(self, routers):
        return {router.name: self.router_total for router in routers}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pools(prefill_min: int = 1, prefill_max: int = 4, down_window: float = 30.0) -> LocalPools:
    settings = AutoscalingSettings(
        interval_seconds=1.0,
        scale_up_stabilization_seconds=0.0,
        scale_down_stabilization_seconds=down_window,
    )
    return LocalPools(
        PoolConfig("prefill", prefill_min, prefill_max, target_queue_depth=4),
        PoolConfig("decode", 1, 2, target_queue_depth=4),
        settings,
    )


def build(actuator, source, **pool_options):
    clock = Clock()
    lines: list[str] = []
    scaler = LocalAutoscaler(
        pools(**pool_options), actuator, source=source, clock=clock, emit=lines.append
    )
    return scaler, clock, lines


def test_queue_burst_scales_prefill_up():
    actuator = FakeActuator(prefill=1, decode=1)
    source = FakeSource()
    source.load = {"prefill[0]": (9, 0), "decode[0]": (0, 0)}
    scaler, clock, lines = build(actuator, source)
    clock.now += 1

    decisions = scaler.tick()

    assert decisions.prefill.desired_replicas == 3
    assert actuator.calls == [("prefill", 3)]
    assert len(lines) == 1
    assert lines[0].startswith("prefill 1→3: queue depth 9")
    assert "target 4" in lines[0]


def test_idle_pool_scales_down_after_window():
    actuator = FakeActuator(prefill=3, decode=1)
    source = FakeSource()
    source.load = {"prefill[0]": (0, 0), "prefill[1]": (0, 0), "prefill[2]": (0, 0)}
    source.load["decode[0]"] = (0, 0)
    scaler, clock, lines = build(actuator, source, down_window=10.0)

    for _ in range(9):
        clock.now += 1
        scaler.tick()
    assert actuator.calls == []

    clock.now += 2
    scaler.tick()
    assert actuator.calls == [("prefill", 1)]
    assert lines == [lines[0]]
    assert lines[0].startswith("prefill 3→1")


def test_missing_metrics_hold_printed_once():
    actuator = FakeActuator(prefill=2, decode=1)
    source = FakeSource()
    # The scrape of prefill[1] fails, and the load of prefill[0] alone would allow a scale-down.
    source.load = {"prefill[0]": (0, 0), "decode[0]": (0, 0)}
    scaler, clock, lines = build(actuator, source, down_window=0.0)

    for _ in range(3):
        clock.now += 1
        decisions = scaler.tick()
        assert decisions.prefill.desired_replicas == 2

    assert actuator.calls == []
    assert lines == ["prefill hold at 2: metrics from 1 of 2 ready replicas, no scale-down"]


def test_hold_printed_again_after_data_returns():
    actuator = FakeActuator(prefill=2, decode=1)
    source = FakeSource()
    source.load = {"prefill[0]": (4, 0), "decode[0]": (0, 0)}
    scaler, clock, lines = build(actuator, source)
    clock.now += 1
    scaler.tick()
    source.load["prefill[1]"] = (4, 0)
    clock.now += 1
    scaler.tick()
    del source.load["prefill[1]"]
    clock.now += 1
    scaler.tick()

    assert len(lines) == 2
    assert all(line.startswith("prefill hold at 2: metrics from 1 of 2") for line in lines)


def test_fallbacks_scale_prefill_from_zero():
    actuator = FakeActuator(prefill=0, decode=1)
    source = FakeSource()
    source.load = {"decode[0]": (0, 0)}
    scaler, clock, lines = build(actuator, source, prefill_min=0)
    clock.now += 1
    scaler.tick()
    assert actuator.calls == []

    source.router_total = 3.0
    clock.now += 1
    scaler.tick()

    assert actuator.calls == [("prefill", 1)]
    assert lines == ["prefill 0→1: 3 local-prefill fallbacks with no prefill replica"]


def test_failed_scale_is_not_recorded():
    actuator = FakeActuator(prefill=1, decode=1, fail_scale=True)
    source = FakeSource()
    source.load = {"prefill[0]": (9, 0), "decode[0]": (0, 0)}
    scaler, clock, lines = build(actuator, source)
    clock.now += 1

    decisions = scaler.tick()

    assert actuator.calls == [("prefill", 3)]
    assert decisions.prefill.desired_replicas == 1
    assert lines == []
    assert scaler.histories["prefill"].last_scale_time == 1000.0


def parse_serve(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefill-replicas", type=int, default=1)
    parser.add_argument("--decode-replicas", type=int, default=1)
    parser.add_argument("--aggregated-replicas", type=int, default=0)
    serve_autoscale.add_arguments(parser)
    return parser.parse_args(argv)


def test_no_bounds_keeps_fixed_replicas():
    assert serve_autoscale.pools_from_args(parse_serve("--prefill-replicas", "2")) is None


def test_bounds_build_pool_configs():
    args = parse_serve("--prefill-min", "0", "--prefill-max", "3", "--decode-max", "2")
    local = serve_autoscale.pools_from_args(args)
    assert (local.prefill.min_replicas, local.prefill.max_replicas) == (0, 3)
    assert (local.decode.min_replicas, local.decode.max_replicas) == (1, 2)
    assert local.settings.scale_down_stabilization_seconds == 300.0


def test_policy_flags_map_to_settings():
    args = parse_serve(
        "--decode-max", "2",
        "--load-window", "120",
        "--max-scale-down-step", "1",
        "--prefill-scale-down-stabilization", "30",
        "--decode-scale-down-stabilization", "600",
        "--prefill-target-in-flight", "1",
        "--decode-target-in-flight", "6.5",
    )  # fmt: skip
    local = serve_autoscale.pools_from_args(args)
    assert local.settings.load_window_seconds == 120.0
    assert local.settings.max_scale_down_step_replicas == 1
    assert local.prefill.scale_down_stabilization_seconds == 30.0
    assert local.decode.scale_down_stabilization_seconds == 600.0
    assert local.prefill.target_in_flight == 1.0
    assert local.decode.target_in_flight == 6.5


def test_policy_flags_default_off():
    local = serve_autoscale.pools_from_args(parse_serve("--decode-max", "2"))
    assert local.settings.load_window_seconds == 0.0
    assert local.settings.max_scale_down_step_replicas is None
    assert local.settings.scale_down_step == 4
    assert local.prefill.scale_down_stabilization_seconds is None
    assert local.decode.scale_down_stabilization_seconds is None
    assert local.prefill.target_in_flight is None
    assert local.decode.target_in_flight is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--load-window", "-1"), "argument --load-window: invalid seconds -1.0"),
        (("--max-scale-down-step", "0"), "argument --max-scale-down-step: invalid replica step 0"),
        (("--max-scale-down-step", "1.5"), "argument --max-scale-down-step: invalid replica step"),
        (
            ("--prefill-scale-down-stabilization", "-5"),
            "argument --prefill-scale-down-stabilization: invalid seconds -5.0",
        ),
        (
            ("--decode-scale-down-stabilization", "soon"),
            "argument --decode-scale-down-stabilization: invalid seconds 'soon'",
        ),
        (("--prefill-target-in-flight", "0"), "argument --prefill-target-in-flight: invalid"),
        (("--decode-target-in-flight", "nan"), "argument --decode-target-in-flight: invalid"),
    ],
)
def test_invalid_policy_flag_rejected(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_serve("--decode-max", "2", *argv)
    assert message in capsys.readouterr().err


def test_initial_replicas_clamped_to_min():
    args = parse_serve("--prefill-min", "2", "--prefill-max", "3")
    serve_autoscale.pools_from_args(args)
    assert args.prefill_replicas == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--decode-min", "0"), "invalid --decode-min 0"),
        (("--prefill-min", "3", "--prefill-max", "2"), r"--prefill-max 2: .* \(--prefill-min\)"),
        (
            ("--prefill-replicas", "3", "--prefill-max", "2"),
            r"--prefill-max 2: .* \(--prefill-replicas\)",
        ),
        (("--decode-max", "2", "--aggregated-replicas", "1"), "--aggregated-replicas 1"),
        (("--decode-max", "2", "--target-queue-depth", "0"), "invalid --target-queue-depth"),
        (("--decode-max", "2", "--autoscale-interval", "0"), "invalid --autoscale-interval"),
    ],
)
def test_invalid_bounds_rejected(argv, message):
    with pytest.raises(ValueError, match=message):
        serve_autoscale.pools_from_args(parse_serve(*argv))


def test_serve_decode_min_zero_error(capsys):
    code = main(["serve", "--decode-min", "0", "--decode-max", "2"])
    assert code == 2
    error = capsys.readouterr().err
    assert "invalid --decode-min 0" in error
    assert "use --decode-min 1 or more" in error
