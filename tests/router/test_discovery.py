"""Discovery: DNS of headless Services through a fake resolver, files, health rotation."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from disagg_worker.router.discovery import (
    DiscoveryError,
    DnsDiscovery,
    FileDiscovery,
    apply_once,
    parse_address_list,
    write_endpoints_file,
)


class FakeResolver:
    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.queries: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.queries.append(host)
        return self.records.get(host, [])


async def test_dns_names_headless_services():
    resolver = FakeResolver(
        {"chat-prefill.team.svc": ["127.0.0.2"], "chat-decode.team.svc": ["127.0.0.3", "127.0.0.4"]}
    )
    endpoints = await DnsDiscovery("chat.team", 50051, resolver).resolve()
    assert sorted(resolver.queries) == ["chat-decode.team.svc", "chat-prefill.team.svc"]
    assert endpoints.prefill == ("127.0.0.2:50051",)
    assert endpoints.decode == ("127.0.0.3:50051", "127.0.0.4:50051")


@pytest.mark.parametrize("target", ["chat", "chat.", ".team", "a.b.c"])
def test_dns_target_must_be_name_dot_namespace(target):
    with pytest.raises(ValueError, match=r"NAME\.NAMESPACE"):
        DnsDiscovery(target, 50051, FakeResolver({}))


async def test_dns_failure_keeps_endpoints():
    async def broken(host):
        raise OSError("resolver down")

    with pytest.raises(DiscoveryError, match="resolver down"):
        await DnsDiscovery("chat.team", 50051, broken).resolve()


async def test_dns_replicas_join_and_leave_router(start_router, fake_workers):
    """Workers on 127.0.0.2/3 found by a fake resolver serve requests; a removed one leaves."""
    first = await fake_workers("decode", host="127.0.0.2")
    port = int(first.address.rsplit(":", 1)[1])
    second = type(first)("decode", first.reply_ids, host="127.0.0.3")
    await second.start(port)
    try:
        records = {"chat-decode.team.svc": ["127.0.0.2", "127.0.0.3"]}
        resolver = FakeResolver(records)
        router = await start_router()
        discovery = DnsDiscovery("chat.team", port, resolver)
        pools = router.router.pools
        await apply_once(discovery, pools)
        assert pools["decode"].addresses == [f"127.0.0.2:{port}", f"127.0.0.3:{port}"]
        assert len(pools["decode"].ready_replicas()) == 2

        records["chat-decode.team.svc"] = ["127.0.0.3"]
        await apply_once(discovery, pools)
        assert pools["decode"].addresses == [f"127.0.0.3:{port}"]
        body = {"model": "SmolLM2-135M-Instruct", "prompt": "hi", "max_tokens": 3}
        async with router.post("/v1/completions", body=body) as response:
            assert response.status == 200
        assert len(second.generate_calls) == 1
    finally:
        await second.stop()


async def test_unhealthy_replica_leaves_and_returns(start_router, fake_workers):
    decode = await fake_workers("decode")
    router = await start_router(decode=[decode])
    pool = router.router.pools["decode"]
    port = int(decode.address.rsplit(":", 1)[1])
    await decode.stop()
    await pool.poll_once()
    assert pool.ready_replicas() == []

    await decode.start(port)
    deadline = time.monotonic() + 10
    while not pool.ready_replicas() and time.monotonic() < deadline:
        await pool.poll_once()
        await asyncio.sleep(0.1)
    assert [replica.address for replica in pool.ready_replicas()] == [decode.address]


async def test_endpoints_file_roundtrip(tmp_path):
    from disagg_worker.router.discovery import Endpoints

    path = tmp_path / "endpoints.json"
    write_endpoints_file(path, Endpoints(prefill=("127.0.0.1:1",), decode=("127.0.0.1:2",)))
    endpoints = await FileDiscovery(path).resolve()
    assert endpoints.prefill == ("127.0.0.1:1",)
    assert endpoints.decode == ("127.0.0.1:2",)


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", json.dumps({"decode": "127.0.0.1:2"}), json.dumps({"decode": ["nohost"]})],
)
async def test_bad_endpoints_file_raises(tmp_path, content):
    path = tmp_path / "endpoints.json"
    path.write_text(content)
    with pytest.raises(DiscoveryError, match="endpoints file"):
        await FileDiscovery(path).resolve()


@pytest.mark.parametrize("text", ["localhost", "host:", ":80", "host:99999", "host:port"])
def test_bad_static_address_raises(text):
    with pytest.raises(ValueError, match="--decode-endpoints: invalid address"):
        parse_address_list(text, "--decode-endpoints")
