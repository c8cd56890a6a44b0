"""Decode stalls from long prompts: disaggregated against aggregated, same CPU budget.

Steps, for each layout in turn (one `LocalDeployment` at a time, each
worker on --threads-per-replica torch threads):
- disaggregated: 1 prefill + 1 decode replica; prompts of at least
  --min-remote-prefill-tokens go to the prefill replica.
- aggregated: 2 aggregated replicas; every prompt is prefilled where it
  decodes.
1. TTFT of a --ttft-prompt-tokens prompt on the idle deployment (median of
   --ttft-repeats). In the disaggregated layout a second router with no
   prefill endpoints sends the same prompt to the same decode replica, so
   remote and local prefill are measured side by side, alternating;
   ttft_overhead is remote over local.
2. Steady phase: --short-streams closed-loop streams of short requests for
   --phase-seconds; inter-token latency (ITL) is the gap between streamed
   chunks as the client sees them.
3. Long-prompt phase: the same streams plus one --long-prompt-tokens
   prompt (max_tokens 1) every --long-every seconds, open loop.
The figure of merit is each layout's p99 ITL with long prompts over
without: a long prefill on a replica that also decodes stalls its streams.
There are more short streams than replicas, so every aggregated replica is
decoding when a long prompt arrives. With one stream per replica the
router's least-loaded choice can put the long prompt on a replica that is
momentarily idle between two short requests, and the stall goes unseen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

HELP = "p99 inter-token latency with and without long prompts, disaggregated vs aggregated"

TOKEN_ID_LOW, TOKEN_ID_HIGH = 1000, 30000


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: it must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {value}: it must be above 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2", help="model source (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--phase-seconds",
        type=_positive_float,
        default=30.0,
        help="seconds of each steady and long-prompt phase (default: %(default)s)",
    )
    parser.add_argument(
        "--short-streams",
        type=_positive_int,
        default=4,
        help="concurrent closed-loop streams of short requests (default: %(default)s)",
    )
    parser.add_argument(
        "--short-prompt-tokens",
        type=_positive_int,
        default=32,
        help="prompt tokens of a short request (default: %(default)s)",
    )
    parser.add_argument(
        "--short-max-tokens",
        type=_positive_int,
        default=48,
        help="output tokens of a short request (default: %(default)s)",
    )
    parser.add_argument(
        "--long-prompt-tokens",
        type=_positive_int,
        default=768,
        help="prompt tokens of a long request (default: %(default)s)",
    )
    parser.add_argument(
        "--long-every",
        type=_positive_float,
        default=3.0,
        help="seconds between two long requests (default: %(default)s)",
    )
    parser.add_argument(
        "--ttft-prompt-tokens",
        type=_positive_int,
        default=512,
        help="prompt tokens of the TTFT comparison (default: %(default)s)",
    )
    parser.add_argument(
        "--ttft-repeats",
        type=_positive_int,
        default=9,
        help="TTFT measurements per layout; the median is reported (default: %(default)s)",
    )
    parser.add_argument(
        "--min-remote-prefill-tokens",
        type=_positive_int,
        default=64,
        help="router threshold for remote prefill (default: %(default)s)",
    )
    parser.add_argument(
        "--threads-per-replica",
        type=_positive_int,
        default=1,
        help="torch threads of each of the 2 workers of either layout (default: %(default)s)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        help="write a PNG of the figures to this file (default: no plot)",
    )


def _prompt(generator: random.Random, length: int) -> list[int]:
    return [generator.randrange(TOKEN_ID_LOW, TOKEN_ID_HIGH) for _ in range(length)]


def _p99(values: list[float]) -> float | None:
    from disagg_worker.replay.report import percentile

    return percentile(values, 0.99)


async def _measure_ttft(urls: dict[str, str], model: str, args) -> dict[str, float]:
    """Return the median TTFT per URL name, sending to the URLs in turn."""
    import openai

    from disagg_worker.replay.runner import send_one
    from disagg_worker.replay.workload import PlannedRequest

    generator = random.Random(1)
    ttfts: dict[str, list[float]] = {name: [] for name in urls}
    clients = {
        name: openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        for name, url in urls.items()
    }
    try:
        for index in range(args.ttft_repeats + 1):
            prompt = _prompt(generator, args.ttft_prompt_tokens)
            for name, client in clients.items():
                planned = PlannedRequest(index, 0.0, prompt, 2, False)
                result = await send_one(client, model, planned, time.perf_counter())
                if result.error:
                    raise RuntimeError(
                        f"TTFT request to {urls[name]} failed: {result.error} "
                        f"{result.error_message}"
                    )
                # The first round warms up the code paths and is not counted.
                if index:
                    ttfts[name].append(result.ttft_s)
    finally:
        for client in clients.values():
            await client.close()
    return {name: statistics.median(values) for name, values in ttfts.items()}


async def _phase(url: str, model: str, args, with_long: bool) -> dict:
    """Run the short streams (and the long prompts) for one phase; return the ITLs."""
    import openai

    from disagg_worker.replay.runner import send_one
    from disagg_worker.replay.workload import PlannedRequest

    generator = random.Random(2 if with_long else 3)
    itls: list[float] = []
    errors: list[str] = []
    long_ttfts: list[float] = []
    started = time.perf_counter()
    deadline = started + args.phase_seconds

    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:

        async def short_stream(stream_index: int) -> None:
            index = 0
            while time.perf_counter() < deadline:
                planned = PlannedRequest(
                    index,
                    0.0,
                    _prompt(generator, args.short_prompt_tokens),
                    args.short_max_tokens,
                    False,
                )
                result = await send_one(client, model, planned, started)
                index += 1
                if result.error:
                    errors.append(result.error)
                    await asyncio.sleep(0.5)
                itls.extend(result.itl_s)

        async def long_prompt(index: int) -> None:
            planned = PlannedRequest(
                index, 0.0, _prompt(generator, args.long_prompt_tokens), 1, False
            )
            result = await send_one(client, model, planned, started)
            if result.error:
                errors.append(result.error)
            elif result.ttft_s is not None:
                long_ttfts.append(result.ttft_s)

        async def long_prompts() -> None:
            # Open loop: one long prompt every --long-every seconds, whether or
            # not the previous one finished, so stalls keep coming at that rate.
            running = []
            index = 0
            while time.perf_counter() + args.long_every < deadline:
                await asyncio.sleep(args.long_every)
                running.append(asyncio.create_task(long_prompt(index)))
                index += 1
            await asyncio.gather(*running)

        tasks = [short_stream(index) for index in range(args.short_streams)]
        if with_long:
            tasks.append(long_prompts())
        await asyncio.gather(*tasks)
    return {
        "itl_p50": statistics.median(itls) if itls else None,
        "itl_p99": _p99(itls),
        "itl_max": max(itls) if itls else None,
        "itl_samples": len(itls),
        "long_prompts": len(long_ttfts),
        "errors": len(errors),
    }


def _local_router(deployment, args):
    """Start a router over the deployment's decode replicas only: local prefill always."""
    from disagg_worker.serve import ManagedProcess, disagg_command, free_port

    host = deployment.options.host
    port = free_port(host)
    argv = [
        *disagg_command(),
        "router",
        "--model",
        args.model,
        "--host",
        host,
        "--port",
        str(port),
        "--decode-endpoints",
        ",".join(deployment.pools["decode"].addresses),
    ]
    router = ManagedProcess("router-local", argv, {}, f"http://{host}:{port}/health")
    router.start()
    return router, f"http://{host}:{port}"


def _run_layout(name: str, args, **replicas) -> dict:
    from disagg_worker.serve import LocalDeployment, PoolOptions, stop_processes

    options = PoolOptions(model=args.model, threads=args.threads_per_replica, drain_timeout_s=10)
    deployment = LocalDeployment(
        options,
        port=0,
        router_args=["--min-remote-prefill-tokens", str(args.min_remote_prefill_tokens)],
        **replicas,
    )
    extra = []
    print(f"bench interference: starting the {name} layout", flush=True)
    try:
        deployment.start(timeout_s=600)
        urls = {name: deployment.url}
        if replicas.get("prefill_replicas"):
            router, urls["local"] = _local_router(deployment, args)
            extra.append(router)
            while not router.healthy():
                if not router.running():
                    raise RuntimeError("the local-prefill router exited during startup")
                time.sleep(0.5)

        async def measure() -> dict:
            from disagg_worker.replay.runner import fetch_model_name

            model = await fetch_model_name(deployment.url)
            ttft = await _measure_ttft(urls, model, args)
            steady = await _phase(deployment.url, model, args, with_long=False)
            long = await _phase(deployment.url, model, args, with_long=True)
            return {"ttft_s": ttft, "steady": steady, "with_long_prompts": long}

        figures = asyncio.run(measure())
    finally:
        stop_processes(extra, 10)
        deployment.stop()
    print(f"bench interference: {name} done", flush=True)
    return figures


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _plot(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = ("disaggregated", "aggregated")
    steady = [result[name]["steady"]["itl_p99"] or 0 for name in layouts]
    with_long = [result[name]["with_long_prompts"]["itl_p99"] or 0 for name in layouts]
    figure, axis = plt.subplots(figsize=(6.5, 3.6))
    positions = range(len(layouts))
    axis.bar([p - 0.2 for p in positions], steady, width=0.4, label="steady")
    axis.bar([p + 0.2 for p in positions], with_long, width=0.4, label="with long prompts")
    axis.set_xticks(list(positions), [f"{name}\n(2 workers)" for name in layouts])
    axis.set_ylabel("p99 inter-token latency (s)")
    axis.set_title("Decode stalls from long prompts")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    from disagg_worker.logs import configure_logging

    # The deployments' children log to stderr; keep this process quiet.
    configure_logging("WARNING")
    result = {
        "disaggregated": _run_layout(
            "disaggregated", args, prefill_replicas=1, decode_replicas=1, aggregated_replicas=0
        ),
        "aggregated": _run_layout(
            "aggregated", args, prefill_replicas=0, decode_replicas=0, aggregated_replicas=2
        ),
    }
    for name in ("disaggregated", "aggregated"):
        layout = result[name]
        layout["itl_p99_ratio"] = _ratio(
            layout["with_long_prompts"]["itl_p99"], layout["steady"]["itl_p99"]
        )
    disaggregated_ttft = result["disaggregated"]["ttft_s"]
    result["ttft_overhead"] = _ratio(
        disaggregated_ttft["disaggregated"], disaggregated_ttft["local"]
    )
    result["settings"] = {
        key: value for key, value in vars(args).items() if key not in ("func", "plot")
    }
    if args.plot is not None:
        _plot(args.plot, result)
        result["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for name in ("disaggregated", "aggregated"):
        layout = result[name]
        print(
            f"{name:<14} p99 ITL steady {layout['steady']['itl_p99']:.3f} s, "
            f"with long prompts {layout['with_long_prompts']['itl_p99']:.3f} s, "
            f"ratio {layout['itl_p99_ratio']:.2f}"
        )
    print(
        f"ttft_overhead {result['ttft_overhead']:.2f} "
        f"(remote {disaggregated_ttft['disaggregated']:.3f} s / local "
        f"{disaggregated_ttft['local']:.3f} s on the same decode replica, "
        f"{args.ttft_prompt_tokens}-token prompt)"
    )
    return 0
