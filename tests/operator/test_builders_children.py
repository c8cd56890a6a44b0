"""build_children: which children, their names, labels, owner references and replicas."""

from __future__ import annotations

import pytest
from crd_support import make_body
from disagg_operator import constants as c
from disagg_operator.builders import Owner, build_children, router_endpoint
from disagg_operator.spec import SpecError

EXPECTED_CHILDREN = [
    ("Service", "demo-prefill"),
    ("Deployment", "demo-prefill"),
    ("PodDisruptionBudget", "demo-prefill"),
    ("Service", "demo-decode"),
    ("Deployment", "demo-decode"),
    ("PodDisruptionBudget", "demo-decode"),
    ("Deployment", "demo-router"),
    ("Service", "demo-router"),
]


def by_kind_and_name(children):
    return {(child["kind"], child["metadata"]["name"]): child for child in children}


def test_children_kinds_and_names():
    children = build_children(make_body())
    assert [(child["kind"], child["metadata"]["name"]) for child in children] == EXPECTED_CHILDREN


def test_children_in_owner_namespace():
    for child in build_children(make_body(namespace="team-a")):
        assert child["metadata"]["namespace"] == "team-a"


@pytest.mark.parametrize(("kind", "name"), EXPECTED_CHILDREN, ids=lambda v: str(v))
def test_child_labels_follow_contract(kind, name):
    child = by_kind_and_name(build_children(make_body()))[kind, name]
    role = name.removeprefix("demo-")
    assert child["metadata"]["labels"] == {
        "app.kubernetes.io/name": "disagg",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/component": role,
        "app.kubernetes.io/managed-by": "disagg-operator",
        "disagg.dev/deployment": "demo",
        "disagg.dev/role": role,
    }


@pytest.mark.parametrize(("kind", "name"), EXPECTED_CHILDREN, ids=lambda v: str(v))
def test_child_owned_by_custom_resource(kind, name):
    child = by_kind_and_name(build_children(make_body()))[kind, name]
    assert child["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "disagg.dev/v1alpha1",
            "kind": "DisaggregatedDeployment",
            "name": "demo",
            "uid": "0b9f6c1e-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


@pytest.mark.parametrize("role", c.ROLES)
def test_deployment_selects_instance_and_role(role):
    deployment = by_kind_and_name(build_children(make_body()))["Deployment", f"demo-{role}"]
    selector = {"app.kubernetes.io/instance": "demo", "disagg.dev/role": role}
    assert deployment["spec"]["selector"] == {"matchLabels": selector}
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()


REPLICA_CASES = [
    # (case id, spec overrides, replicas argument, expected prefill/decode/router replicas)
    ("defaults-1-1-1", {}, None, (1, 1, 1)),
    (
        "spec-2-3-2",
        {"prefill": {"replicas": 2}, "decode": {"replicas": 3}, "router": {"replicas": 2}},
        None,
        (2, 3, 2),
    ),
    ("override-prefill-0", {"prefill": {"minReplicas": 0}}, {"prefill": 0}, (0, 1, 1)),
    ("override-decode-4", {}, {"decode": 4}, (1, 4, 1)),
    ("override-none-keeps-spec", {"decode": {"replicas": 2}}, {"decode": None}, (1, 2, 1)),
]


@pytest.mark.parametrize(
    ("overrides", "replicas", "expected"),
    [case[1:] for case in REPLICA_CASES],
    ids=[case[0] for case in REPLICA_CASES],
)
def test_deployment_replicas(overrides, replicas, expected):
    children = by_kind_and_name(build_children(make_body(**overrides), replicas=replicas))
    actual = tuple(children["Deployment", f"demo-{role}"]["spec"]["replicas"] for role in c.ROLES)
    assert actual == expected


def test_replicas_for_unknown_role_rejected():
    with pytest.raises(ValueError, match="unknown role 'prefil'"):
        build_children(make_body(), replicas={"prefil": 2})


def test_negative_replicas_rejected():
    with pytest.raises(ValueError, match="demo-decode is -1"):
        build_children(make_body(), replicas={"decode": -1})


def test_body_without_uid_rejected():
    body = make_body()
    del body["metadata"]["uid"]
    with pytest.raises(ValueError, match=r"metadata\.uid"):
        build_children(body)


def test_unparsable_spec_raises_spec_error():
    with pytest.raises(SpecError):
        build_children(make_body(prefill={"replicas": "two"}))


def test_owner_from_body():
    owner = Owner.from_body(make_body(name="x", namespace="y"))
    assert owner == Owner(name="x", namespace="y", uid="0b9f6c1e-uid")


@pytest.mark.parametrize(
    ("name", "namespace", "port", "url"),
    [
        ("demo", "models", 8000, "http://demo-router.models.svc:8000"),
        ("llama-split", "inference", 8080, "http://llama-split-router.inference.svc:8080"),
    ],
    ids=["demo-8000", "llama-split-8080"],
)
def test_router_endpoint(name, namespace, port, url):
    assert router_endpoint(name, namespace, port) == url


def test_child_name_unknown_role_rejected():
    with pytest.raises(ValueError, match="unknown role 'worker'"):
        c.child_name("demo", "worker")


def test_longest_name_fits_service_names():
    name = "a" * c.MAX_NAME_LENGTH
    longest = max((c.child_name(name, role) for role in c.ROLES), key=len)
    assert len(longest) == 63
