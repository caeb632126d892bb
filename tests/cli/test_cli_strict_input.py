"""Strict input for the offline commands: what used to be accepted silently and changed the verdicts unnoticed.

Errors (exit 2, nothing on stdout, one line per problem naming file, object and field): unknown fields, duplicate
objects, Helm templates, a read kind without apiVersion. Warnings (stderr, exit 0; errors with --strict): policy
kinds not analyzed, documents that are not Kubernetes objects, named ports no pod declares.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cli_harness import Result

CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80, name: http}]}]}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 5432, name: pg}]}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: shop, labels: {app: cache}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.3}
"""

DB_FROM_WEB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: pg}]
"""

ERROR = "netpol-auditor analyze: error: "
WARNING = "netpol-auditor analyze: warning: "


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def analyze(cli: Callable[..., Result], *argv: str, stdin: str | None = None) -> Result:
    result = cli(["analyze", "--matrix", *argv, "--port", "5432/TCP"], stdin=stdin)
    assert "Traceback" not in result.err
    return result


def assert_errors(result: Result, *lines: str) -> None:
    assert (result.code, result.out) == (2, ""), result.err
    assert result.err.splitlines() == [ERROR + line for line in lines]


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    return write(tmp_path, "cluster.yaml", CLUSTER)


@pytest.fixture
def reference(cluster: Path, tmp_path: Path, cli: Callable[..., Result]) -> str:
    """The matrix of the valid input: what every warning-only case must still print."""
    result = analyze(cli, "-f", str(cluster), "-f", str(write(tmp_path, "ok/db.yaml", DB_FROM_WEB)))
    assert (result.code, result.err) == (0, "")
    assert "5 allowed, 1 denied" in result.out
    return result.out


# -- unknown fields -----------------------------------------------------------------------------------------------


def test_misspelt_ingress_is_an_error_not_a_deny_all(cluster: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    policy = write(tmp_path, "db.yaml", DB_FROM_WEB.replace("  ingress:", "  ingres:"))
    result = analyze(cli, "-f", str(cluster), "-f", str(policy))
    assert_errors(result, f'{policy}: NetworkPolicy shop/db: unknown field "spec.ingres" (did you mean "ingress"?)')


POLICY_TYPOS = {
    "spec": ("  podSelector: {}\n  policyType: [Ingress]\n", "spec.policyType"),
    "selector": ("  podSelector: {matchLabel: {app: db}}\n", "spec.podSelector.matchLabel"),
    "rule": ("  podSelector: {}\n  ingress: [{form: [{podSelector: {}}]}]\n", "spec.ingress[0].form"),
    "egress rule": ("  podSelector: {}\n  egress: [{to: [], port: [{port: 53}]}]\n", "spec.egress[0].port"),
    "peer": ("  podSelector: {}\n  egress: [{to: [{ipblock: {cidr: 10.0.0.0/8}}]}]\n", "spec.egress[0].to[0].ipblock"),
    "ipBlock": (
        "  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, exept: [10.1.0.0/16]}}]}]\n",
        "spec.egress[0].to[0].ipBlock.exept",
    ),
    "port": ("  podSelector: {}\n  ingress: [{ports: [{port: 80, protcol: UDP}]}]\n",
             "spec.ingress[0].ports[0].protcol"),
    "matchExpressions": (
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions:\n"
        "        - {key: team, operator: In, value: [a]}\n",
        "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].value",
    ),
    "metadata": ("  podSelector: {}\n", "metadata.namepsace"),
}  # fmt: skip


@pytest.mark.parametrize("where", sorted(POLICY_TYPOS))
def test_unknown_policy_field_names_file_object_and_path(
    where: str, cluster: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    spec, field = POLICY_TYPOS[where]
    meta = "{name: p, namespace: shop, namepsace: prod}" if where == "metadata" else "{name: p, namespace: shop}"
    policy = write(tmp_path, "p.yaml", f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {meta}\n"
                                        f"spec:\n{spec}")  # fmt: skip
    result = analyze(cli, "-f", str(cluster), "-f", str(policy))
    assert result.code == 2 and result.out == ""
    assert len(result.err.splitlines()) == 1, result.err
    assert result.err.startswith(f'{ERROR}{policy}: NetworkPolicy shop/p: unknown field "{field}"'), result.err


def test_pod_fields_that_change_a_verdict_are_checked(tmp_path: Path, cli: Callable[..., Result]) -> None:
    bad = CLUSTER.replace("{name: web, namespace: shop, labels:", "{name: web, namespace: shop, label:").replace(
        "containerPort: 5432, name: pg", "containerport: 5432, name: pg"
    )
    path = write(tmp_path, "cluster.yaml", bad)
    result = analyze(cli, "-f", str(path))
    assert_errors(
        result,
        f'{path}: Pod shop/web: unknown field "metadata.label" (did you mean "labels"?)',
        f'{path}: Pod shop/db: unknown field "spec.containers[0].ports[0].containerport" '
        '(did you mean "containerPort"?)',
    )


def test_pod_fields_the_tool_does_not_model_are_accepted(
    tmp_path: Path, reference: str, cli: Callable[..., Result]
) -> None:
    pods = yaml.safe_load_all(CLUSTER)
    docs = []
    for doc in pods:
        if doc["kind"] == "Pod":
            doc["spec"].update(nodeSelector={"a": "b"}, schedulingGates=[], someFieldOfANewerRelease={"x": 1})
            doc["spec"]["containers"][0].update(args=["--format={{.Name}}"], resizePolicy=[])
            doc["status"].update(hostIP="10.1.0.1", conditions=[{"type": "Ready", "status": "True"}])
        docs.append(doc)
    path = write(tmp_path, "cluster.yaml", yaml.safe_dump_all(docs))
    result = analyze(cli, "-f", str(path), "-f", str(write(tmp_path, "db.yaml", DB_FROM_WEB)))
    assert (result.code, result.err, result.out) == (0, "", reference)


def test_every_problem_is_reported_one_line_each(cluster: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    misspelt = DB_FROM_WEB.replace("  ingress:", "  ingres:").replace("podSelector:", "podselector:")
    first = write(tmp_path, "a.yaml", misspelt)
    second = write(tmp_path, "b.yaml", DB_FROM_WEB.replace("name: db,", "name: other,").replace("ports:", "portz:"))
    result = analyze(cli, "-f", str(cluster), "-f", str(first), "-f", str(second))
    assert_errors(
        result,
        f'{first}: NetworkPolicy shop/db: unknown field "spec.podselector" (did you mean "podSelector"?)',
        f'{first}: NetworkPolicy shop/db: unknown field "spec.ingres" (did you mean "ingress"?)',
        f'{second}: NetworkPolicy shop/other: unknown field "spec.ingress[0].portz" (did you mean "ports"?)',
    )  # fmt: skip


def test_a_key_given_twice_is_an_error(cluster: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    policy = write(tmp_path, "db.yaml", DB_FROM_WEB + "  ingress: []\n")  # would silently replace the rule above
    result = analyze(cli, "-f", str(cluster), "-f", str(policy))
    assert_errors(result, f'{policy}: line 9: invalid YAML/JSON: duplicate key "ingress"')


def test_yaml_merge_keys_may_be_overridden(cluster: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    policy = write(tmp_path, "db.yaml", "defaults: &meta {name: x, namespace: shop}\n---\n" + DB_FROM_WEB.replace(
        "metadata: {name: db, namespace: shop}", "metadata:\n  <<: {name: x, namespace: shop}\n  name: db"))
    result = analyze(cli, "-f", str(cluster), "-f", str(policy))
    assert result.code == 0 and "document 1: not a Kubernetes object" in result.err


def test_a_read_kind_without_api_version_is_an_error(cluster: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    policy = write(tmp_path, "db.yaml", DB_FROM_WEB.replace("apiVersion: networking.k8s.io/v1\n", ""))
    result = analyze(cli, "-f", str(cluster), "-f", str(policy))
    assert_errors(result, f"{policy}: NetworkPolicy shop/db: apiVersion: Required value")


# -- duplicates ---------------------------------------------------------------------------------------------------


def test_duplicate_object_names_both_files(cluster: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    first = write(tmp_path, "a/db.yaml", DB_FROM_WEB)
    second = write(tmp_path, "b/db.yaml", DB_FROM_WEB.replace("app: web", "app: nobody"))
    result = analyze(cli, "-f", str(cluster), "-f", str(tmp_path / "a"), "-f", str(second))
    assert_errors(
        result,
        f"{second}: NetworkPolicy shop/db: duplicate object: also defined in {first} (one would silently replace "
        "the other)",
    )


def test_duplicate_pod_in_one_file(tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = write(tmp_path, "cluster.yaml", CLUSTER + "---\n" + CLUSTER.split("---\n")[1])
    result = analyze(cli, "-f", str(path))
    assert_errors(
        result, f"{path}: Pod shop/web: duplicate object: also defined earlier in this file (one would silently "
        "replace the other)"
    )  # fmt: skip


def test_same_name_in_another_namespace_or_kind_is_no_duplicate(
    cluster: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    other = write(tmp_path, "other.yaml", DB_FROM_WEB.replace("namespace: shop", "namespace: billing"))
    pod_named_db = write(tmp_path, "db.yaml", DB_FROM_WEB)  # a NetworkPolicy shop/db next to the Pod shop/db
    result = analyze(cli, "-f", str(cluster), "-f", str(other), "-f", str(pod_named_db))
    assert (result.code, result.err) == (0, "")


def test_a_file_named_twice_is_read_once(
    cluster: Path, tmp_path: Path, reference: str, cli: Callable[..., Result]
) -> None:
    policy = tmp_path / "ok" / "db.yaml"  # written by `reference`
    result = analyze(cli, "-f", str(cluster), "-f", str(tmp_path / "ok"), "-f", str(policy))
    assert (result.code, result.err, result.out) == (0, "", reference)


# -- kinds ----------------------------------------------------------------------------------------------------------

# Cilium, Calico and Antrea policies warn too, and their pods' paths are out of model: test_cli_vendor_policies.py.
FOREIGN = [
    # Versions of the policy.networking.k8s.io kinds other than those read (v1alpha1 AdminNetworkPolicy and
    # BaselineAdminNetworkPolicy, v1alpha2 ClusterNetworkPolicy) are not guessed at.
    ("policy.networking.k8s.io/v1alpha2", "AdminNetworkPolicy", None),
    ("policy.networking.k8s.io/v1beta1", "BaselineAdminNetworkPolicy", None),
    ("policy.networking.k8s.io/v1alpha1", "ClusterNetworkPolicy", None),
    ("networking.k8s.io/v1beta1", "NetworkPolicy", "shop"),
    ("extensions/v1beta1", "NetworkPolicy", "shop"),
    ("networking.k8s.io/v1", "Networkpolicy", "shop"),  # a misspelt kind
]


@pytest.mark.parametrize(("api_version", "kind", "namespace"), FOREIGN, ids=[f"{a} {k}" for a, k, _ in FOREIGN])
def test_policy_kinds_not_analyzed_warn_and_fail_with_strict(
    api_version: str, kind: str, namespace: str | None, tmp_path: Path, reference: str, cli: Callable[..., Result]
) -> None:
    meta = {"name": "extra"} | ({"namespace": namespace} if namespace else {})
    foreign = {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": {"anything": True}}
    write(tmp_path, "ok/foreign.yaml", yaml.safe_dump(foreign))
    shown = f"{kind} {namespace}/extra" if namespace else f"{kind} extra"
    line = (
        f"{tmp_path / 'ok' / 'foreign.yaml'}: {shown}: {api_version} {kind} is not analyzed, only networking.k8s.io/v1 "
        "NetworkPolicy, policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy and BaselineAdminNetworkPolicy, and "
        "policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy are: the verdicts leave out what it allows or denies"
    )
    cluster = str(tmp_path / "cluster.yaml")
    result = analyze(cli, "-f", cluster, "-f", str(tmp_path / "ok"))
    assert (result.code, result.out) == (0, reference)
    assert result.err.splitlines() == [WARNING + line]

    assert_errors(analyze(cli, "-f", cluster, "-f", str(tmp_path / "ok"), "--strict"), line)


def test_kinds_that_do_not_matter_are_ignored_silently(
    tmp_path: Path, reference: str, cli: Callable[..., Result]
) -> None:
    others = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"},
         "data": {"alert": "{{ $labels.instance }} is down"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "shop"}, "spec": {"portz": 1}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "shop"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "shop"}},
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": ["db.yaml"]},
    ]  # fmt: skip
    write(tmp_path, "ok/others.yaml", yaml.safe_dump_all(others))
    result = analyze(cli, "-f", str(tmp_path / "cluster.yaml"), "-f", str(tmp_path / "ok"), "--strict")
    assert (result.code, result.err, result.out) == (0, "", reference)


def test_misspelt_pod_kind_warns(cluster: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = write(tmp_path, "more.yaml", "apiVersion: v1\nkind: pod\nmetadata: {name: x, namespace: shop}\n")
    result = analyze(cli, "-f", str(cluster), "-f", str(path))
    assert result.code == 0
    assert result.err == f'{WARNING}{path}: pod shop/x: kind: unknown kind "pod": skipped\n'


# -- documents that are not Kubernetes objects --------------------------------------------------------------------


def test_non_kubernetes_yaml_in_a_directory_is_skipped_with_a_warning(
    tmp_path: Path, reference: str, cli: Callable[..., Result]
) -> None:
    write(tmp_path, "ok/values.yaml", "replicas: 3\nimage: {tag: latest}\n")
    write(tmp_path, "ok/ci/pipeline.yml", "- step: build\n- step: test\n")
    write(tmp_path, "ok/stack.yaml", "Resources:\n  Bucket: !Ref Name\n---\napiVersion: v1\nkind: ConfigMap\n")
    write(tmp_path, "ok/notes.yaml", "just some text\n")
    result = analyze(cli, "-f", str(tmp_path / "cluster.yaml"), "-f", str(tmp_path / "ok"))
    assert (result.code, result.out) == (0, reference)
    ok = tmp_path / "ok"
    assert result.err.splitlines() == [
        f"{WARNING}{ok / 'notes.yaml'}: document 1: not a Kubernetes object (a str): skipped",
        f"{WARNING}{ok / 'stack.yaml'}: document 1: not a Kubernetes object (no apiVersion and kind): skipped",
        f"{WARNING}{ok / 'values.yaml'}: document 1: not a Kubernetes object (no apiVersion and kind): skipped",
        f"{WARNING}{ok / 'ci' / 'pipeline.yml'}: document 1: not a Kubernetes object (a list): skipped",
    ]
    strict = analyze(cli, "-f", str(tmp_path / "cluster.yaml"), "-f", str(tmp_path / "ok"), "--strict")
    assert strict.code == 2 and strict.out == "" and len(strict.err.splitlines()) == 4


def test_objects_after_a_non_kubernetes_document_are_read(tmp_path: Path, cli: Callable[..., Result]) -> None:
    """A skipped document skips only itself (the duplicate below proves both namespaces were read)."""
    path = write(tmp_path, "two.yaml", "a: 1\n---\n" + CLUSTER.split("---\n")[0] + "---\n" + CLUSTER.split("---\n")[0])
    result = analyze(cli, "-f", str(path))
    assert result.code == 2
    assert f"{ERROR}{path}: Namespace shop: duplicate object" in result.err


# -- Helm -----------------------------------------------------------------------------------------------------------

TEMPLATE = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "app.fullname" . }}
spec:
  podSelector:
    matchLabels:
      {{- include "app.selectorLabels" . | nindent 6 }}
"""


def test_a_helm_chart_directory_asks_for_helm_template(tmp_path: Path, cli: Callable[..., Result]) -> None:
    chart = tmp_path / "charts" / "app"
    write(chart, "Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\n")
    write(chart, "values.yaml", "replicas: 1\n")
    write(chart, "templates/netpol.yaml", TEMPLATE)
    result = analyze(cli, "-f", str(tmp_path / "charts"))
    assert_errors(
        result,
        f"{chart}: a Helm chart (Chart.yaml): render it first (helm template RELEASE {chart} > rendered.yaml) and "
        "analyze the output",
    )


def test_helm_templates_without_their_chart_ask_for_helm_template(tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = write(tmp_path, "templates/netpol.yaml", TEMPLATE)
    quoted = write(tmp_path, "templates/quoted.yaml", DB_FROM_WEB.replace("name: db,", 'name: "{{ .Release.Name }}",'))
    result = analyze(cli, "-f", str(tmp_path / "templates"))
    hint = "render it first (helm template RELEASE CHART > rendered.yaml) and analyze the output"
    assert_errors(
        result,
        f'{path}: line 4: a Helm template ("{{{{" is not YAML): {hint}',
        f'{quoted}: NetworkPolicy shop/{{{{ .Release.Name }}}}: a Helm template ("{{{{" in it): {hint}',
    )


# -- named ports ----------------------------------------------------------------------------------------------------


def test_named_port_no_pod_declares_warns(cluster: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    policy = write(tmp_path, "db.yaml", DB_FROM_WEB.replace("{port: pg}", "{port: postgres}"))
    egress = write(
        tmp_path,
        "web.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: shop}\n"
        "spec:\n  podSelector: {matchLabels: {app: web}}\n  egress:\n"
        "  - ports: [{port: pg}, {port: dns, protocol: UDP}]\n",
    )  # fmt: skip
    result = analyze(cli, "-f", str(cluster), "-f", str(policy), "-f", str(egress))
    assert result.code == 0 and "1 allowed, 5 denied" in result.out
    assert result.err.splitlines() == [
        f'{WARNING}{policy}: NetworkPolicy shop/db: spec.ingress[0].ports[0].port: named port "postgres" (TCP) is '
        "declared by no container of the pods the policy selects: this port entry admits nothing",
        f'{WARNING}{egress}: NetworkPolicy shop/web: spec.egress[0].ports[1].port: named port "dns" (UDP) is '
        "declared by no container of any pod in the input: this port entry admits nothing",
    ]
    assert analyze(cli, "-f", str(cluster), "-f", str(policy), "-f", str(egress), "--strict").code == 2


# -- the inputs that are read ---------------------------------------------------------------------------------------


def test_stdin_json_yml_lists_and_typed_lists_give_the_same_answer(
    tmp_path: Path, reference: str, cli: Callable[..., Result]
) -> None:
    docs = list(yaml.safe_load_all(CLUSTER + "---\n" + DB_FROM_WEB))
    stdin = analyze(cli, "-f", "-", stdin=CLUSTER + "---\n" + DB_FROM_WEB)
    assert (stdin.code, stdin.err, stdin.out) == (0, "", reference)

    as_list = write(tmp_path, "dump.json", json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    assert analyze(cli, "-f", str(as_list)).out == reference

    # What the API itself returns (GET /api/v1/pods): items of a PodList carry no kind or apiVersion.
    pods = [{k: v for k, v in d.items() if k not in ("kind", "apiVersion")} for d in docs if d["kind"] == "Pod"]
    tree = tmp_path / "tree"
    write(tree, "pods/list.json", json.dumps({"apiVersion": "v1", "kind": "PodList", "items": pods}))
    write(tree, "ns.yml", yaml.safe_dump(docs[0]))
    write(tree, "deep/er/policies.yaml", DB_FROM_WEB)
    result = analyze(cli, "-f", str(tree))
    assert (result.code, result.err, result.out) == (0, "", reference)


def test_explain_reads_input_as_strictly(cluster: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    policy = write(tmp_path, "db.yaml", DB_FROM_WEB.replace("  ingress:", "  ingres:"))
    result = cli(["explain", "-f", str(cluster), "-f", str(policy), "--from", "shop/web", "--to", "shop/db"])
    assert (result.code, result.out) == (2, "")
    assert result.err == f'netpol-auditor explain: error: {policy}: NetworkPolicy shop/db: unknown field "spec.ingres" (did you mean "ingress"?)\n'  # noqa: E501
