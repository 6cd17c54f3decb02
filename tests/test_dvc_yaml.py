"""dvc.yaml and params.yaml agree: every listed param exists, every param is read by a stage,
every variant has its stages, metrics are not cached, and each stage command exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _lookup(data, dotted):
    cur = data
    for k in dotted.split("."):
        if not isinstance(cur, dict) or k not in cur:
            raise KeyError(dotted)
        cur = cur[k]
    return cur


def _subst(obj, key):
    if isinstance(obj, str):
        return obj.replace("${key}", key)
    if isinstance(obj, list):
        return [_subst(o, key) for o in obj]
    if isinstance(obj, dict):
        return {_subst(k, key): _subst(v, key) for k, v in obj.items()}
    return obj


def expanded_stages():
    out = {}
    for name, st in DVC["stages"].items():  # noqa: B007
        if "foreach" in st:
            ref = st["foreach"]
            assert ref.startswith("${") and ref.endswith("}")
            for key in _lookup(PARAMS, ref[2:-1]):
                out[f"{name}@{key}"] = _subst(st["do"], key)
        else:
            out[name] = st
    return out


STAGES = expanded_stages()


def out_paths(st) -> list[str]:
    """A stage's outs, as paths (an out is a path or ``{path: {options}}``)."""
    return [o if isinstance(o, str) else next(iter(o)) for o in st.get("outs", [])]


def _leaves(data, prefix=""):
    for k, v in data.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _leaves(v, path + ".")
        else:
            yield path


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_params_exist(stage):
    for p in STAGES[stage].get("params", []):
        assert isinstance(p, str), "params come from params.yaml only"
        _lookup(PARAMS, p)


def test_every_param_is_read_by_some_stage():
    listed = {p for st in STAGES.values() for p in st.get("params", [])}
    unread = [leaf for leaf in _leaves(PARAMS) if not any(leaf == p or leaf.startswith(p + ".") for p in listed)]
    assert not unread, f"params.yaml keys no stage lists: {unread}"


@pytest.mark.parametrize("backend", ["openvino", "ortgenai", "npu"])
def test_every_variant_has_export_smoke_and_validate_stages(backend):
    for key in PARAMS[backend]["variants"]:
        for stage in ("export", "smoke", "validate"):
            assert f"{stage}-{backend}@{key}" in STAGES


def test_metrics_are_not_cached_and_outs_under_artifacts():
    for name, st in STAGES.items():
        for m in st.get("metrics", []):
            (path, opts), = m.items()
            assert opts == {"cache": False}, name
            assert path.startswith("metrics/")
        for o in st.get("outs", []):
            if isinstance(o, dict):  # only the intermediate IR and the smoke/validate records skip the cache
                (path, opts), = o.items()
                assert opts == {"cache": False}, (name, o)
                record = re.fullmatch(r"metrics/(smoke|validate)/[\w-]+\.json", path)
                assert path == "artifacts/openvino-base" or record, (name, o)
        for path in out_paths(st):
            assert path.startswith(("artifacts/", "metrics/smoke/", "metrics/validate/")), name
        for p in st.get("plots", []):
            (path, opts), = p.items()
            assert path.startswith("metrics/plots/") and opts["cache"] is False, (name, p)


def test_deps_exist_or_are_produced():
    produced = {o for st in STAGES.values() for o in out_paths(st)}
    produced |= {next(iter(m)) for st in STAGES.values() for m in st.get("metrics", [])}
    for name, st in STAGES.items():
        for d in st.get("deps", []):
            # a folder of other stages' outputs (the report stage reads metrics/validate/, metrics/cost/)
            folder = any(p.startswith(d.rstrip("/") + "/") for p in produced)
            assert d in produced or folder or (ROOT / d).exists(), f"{name}: dep {d} neither in the repo nor produced"


def test_stage_commands_are_aipc_commands(monkeypatch):
    from click.testing import CliRunner

    from aipc.stages.cli import main

    # what is checked here is the command line; the toolchain check on --cost-metrics has its own test
    monkeypatch.setenv("AIPC_ALLOW_TOOLCHAIN_DRIFT", "1")
    for name, st in STAGES.items():
        argv = st["cmd"].split()
        assert argv[0] == "aipc", name
        # every subcommand path must resolve; --help must work on it
        r = CliRunner().invoke(main, argv[1:-1] + ["--help"] if len(argv) > 2 else argv[1:] + ["--help"])
        assert r.exit_code == 0, (name, r.output[-2000:])


def test_artifacts_are_not_in_git():
    import subprocess

    out = subprocess.run(["git", "ls-files", "artifacts", "metrics"], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == ""
    assert "/artifacts/" in (ROOT / ".gitignore").read_text()


def test_every_stage_records_its_cost_as_an_uncached_metric():
    import re

    for name, st in STAGES.items():
        m = re.match(r"^aipc --cost-metrics (metrics/\S+\.json) ", st["cmd"])
        assert m, f"{name}: cmd must start with `aipc --cost-metrics metrics/cost/<stage>.json`"
        assert {m.group(1): {"cache": False}} in st.get("metrics", []), name
        # the report stage reads metrics/cost/ whole, so its own record sits beside it
        want = "metrics/report-cost.json" if name == "report" else f"metrics/cost/{name.replace('@', '-')}.json"
        assert m.group(1) == want, name


def test_outputs_are_hard_linked_into_the_cache_in_the_repo_and_every_workspace(tmp_path):
    """DVC links outputs into .dvc/cache (no copy of GBs of weights, no second copy on disk): the repo's
    .dvc/config and a new workspace's say so, and re-creating a workspace keeps its config as is."""
    from configparser import ConfigParser

    from aipc.pipeline.workspace import DVC_CACHE_TYPE, create

    assert DVC_CACHE_TYPE.split(",")[0] == "hardlink"  # DVC's commit links only when hardlink comes first

    def cache_type(config: Path) -> str:
        parser = ConfigParser()
        parser.read(config)
        return parser.get("cache", "type").strip('"')

    assert cache_type(ROOT / ".dvc" / "config") == DVC_CACHE_TYPE
    ws = create(tmp_path / "ws")
    config = ws / ".dvc" / "config"
    assert cache_type(config) == DVC_CACHE_TYPE
    before = config.read_text()
    create(tmp_path / "ws")
    assert config.read_text() == before
    # a workspace made before the setting (cache type unset) gets it on its next init
    config.write_text(before.replace(f'type = "{DVC_CACHE_TYPE}"', ""))
    create(tmp_path / "ws")
    assert cache_type(config) == DVC_CACHE_TYPE


def test_every_stage_depends_on_its_toolchain():
    """The main lock shapes every stage's outputs (each runs in the main environment); the NPU environment's
    pins shape the NPU stages' too."""
    for name, st in STAGES.items():
        assert "requirements/lock.txt" in st["deps"], name
        if name.split("@")[0] in ("export-npu", "smoke-npu", "validate-npu"):  # these run in the NPU environment
            assert any(d in ("envs/npu", "envs/npu/requirements.txt") for d in st["deps"]), name


def test_a_drifted_toolchain_is_refused_naming_the_package_and_both_versions(tmp_path, monkeypatch):
    from aipc.pipeline.errors import EnvironmentProblem
    from aipc.pipeline.toolchain import check_toolchain, drift, read_pins

    (tmp_path / "requirements").mkdir()
    lock = tmp_path / "requirements" / "lock.txt"
    lock.write_text((ROOT / "requirements/lock.txt").read_text())
    assert drift(read_pins(lock)) == []  # this environment is the lock's (scripts/setup.sh)
    check_toolchain(tmp_path)
    pins = read_pins(lock)
    assert pins["nncf"] and pins["torch"].startswith("2.13.0")
    lock.write_text(lock.read_text().replace(f"nncf=={pins['nncf']}", "nncf==9.9.9") + "\n# a comment\n")
    with pytest.raises(EnvironmentProblem) as e:
        check_toolchain(tmp_path)
    assert f"nncf: installed {pins['nncf']}, pinned 9.9.9" in e.value.message and "requirements/lock.txt" in e.value.message
    assert "scripts/setup.sh" in e.value.fix and "AIPC_ALLOW_TOOLCHAIN_DRIFT=1" in e.value.fix
    monkeypatch.setenv("AIPC_ALLOW_TOOLCHAIN_DRIFT", "1")
    check_toolchain(tmp_path)  # a warning, no error
    assert drift({"not-a-package": "1.0"}, {}) == ["not-a-package: installed nothing, pinned 1.0"]
    # another environment's packages on sys.path (a test, a plugin) are not this environment's
    other = tmp_path / "other-site"
    (other / "nncf-0.0.1.dist-info").mkdir(parents=True)
    (other / "nncf-0.0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: nncf\nVersion: 0.0.1\n")
    monkeypatch.delenv("AIPC_ALLOW_TOOLCHAIN_DRIFT")
    import sys

    for path in ([str(other), *sys.path], [*sys.path, str(other)]):  # before and after this environment's own
        monkeypatch.setattr(sys, "path", path)
        assert drift(read_pins(ROOT / "requirements/lock.txt")) == [], path[:2]


def _dvc(ws: Path, *args: str):
    import subprocess
    import sys

    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=ws, capture_output=True,
                          text=True, timeout=300)


def test_a_workspace_is_a_git_repository_where_dvc_diffs_params(tmp_path, monkeypatch):
    """`aipc workspace init` makes a git repository of its own: its first commit holds params.yaml, a copy of
    dvc.yaml (a real file: DVC's git mode refuses a symlinked one) and DVC's config; the links into the
    checkout are ignored by git. `dvc params diff` then works (it stops at `Only supported for Git
    repositories` in a no-scm workspace), a second init commits nothing."""
    from scmrepo.git import Git

    from aipc.pipeline.workspace import create

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no git identity configured: it still commits
    ws = create(tmp_path / "ws", ROOT / "configs" / "embedded.yaml")
    assert not (ws / "dvc.yaml").is_symlink() and (ws / "dvc.yaml").read_bytes() == (ROOT / "dvc.yaml").read_bytes()
    assert (ws / "pipeline").is_symlink()
    # the user's own evaluation/calibration texts live in the workspace (a dep of reference and calibration)
    assert (ws / "texts").is_dir() and not (ws / "texts").is_symlink() and (ws / "texts" / "README.md").is_file()
    with Git(str(ws)) as scm:
        head = scm.get_rev()
        tracked = set(scm.get_fs(head).find("/"))
    assert {"params.yaml", "dvc.yaml", ".dvc/config", ".gitignore", "texts/README.md"} <= {t.lstrip("/") for t in tracked}
    assert not any(t.lstrip("/").startswith(("pipeline", "stages", "validation")) for t in tracked)
    assert "/artifacts" in (ws / ".gitignore").read_text().splitlines()
    assert create(ws, ROOT / "configs" / "embedded.yaml") == ws
    with Git(str(ws)) as scm:
        assert scm.get_rev() == head
        staged, unstaged, untracked = scm.status()
        assert not any(staged.values()) and not unstaged and not untracked, (staged, unstaged, untracked)

    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["openvino"]["variants"]["int4"]["ratio"] = 0.8
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = _dvc(ws, "params", "diff", "--json")
    assert r.returncode == 0, r.stderr
    diff = json.loads(r.stdout)["params.yaml"]
    assert diff["openvino.variants.int4.ratio"]["new"] == 0.8, diff
    assert diff["openvino.variants.int4.ratio"]["old"] != 0.8


def test_a_workspace_edit_of_dvc_yaml_never_reaches_the_checkout(tmp_path, monkeypatch):
    """The workspace's dvc.yaml is its own: an edit stays there; init refuses to drop an uncommitted edit
    (naming the file and both ways out), and brings the checkout's version over a committed one."""
    from aipc.pipeline.errors import ConfigError
    from aipc.pipeline.workspace import commit, create

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    checkout = (ROOT / "dvc.yaml").read_bytes()
    ws = create(tmp_path / "ws")
    (ws / "dvc.yaml").write_text("# mine\n" + (ws / "dvc.yaml").read_text())
    assert (ROOT / "dvc.yaml").read_bytes() == checkout
    with pytest.raises(ConfigError) as e:
        create(ws)
    assert "dvc.yaml" in str(e.value) and "git commit" in e.value.fix and "git checkout" in e.value.fix
    assert commit(ws, "my dvc.yaml") is not None
    assert commit(ws, "again") is None  # nothing changed
    create(ws)
    assert (ws / "dvc.yaml").read_bytes() == checkout


def test_a_workspace_from_before_git_becomes_one(tmp_path, monkeypatch):
    """A no-scm workspace with a symlinked dvc.yaml (how workspaces were made before) is upgraded in place by
    init: a git repository, a real dvc.yaml, DVC's no_scm switched off."""
    import os

    from dvc.repo import Repo

    from aipc.pipeline.workspace import create

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ws = tmp_path / "old"
    ws.mkdir()
    (ws / "dvc.yaml").symlink_to(os.path.relpath(ROOT / "dvc.yaml", ws))
    Repo.init(str(ws), no_scm=True).close()
    create(ws)
    assert (ws / ".git").is_dir() and not (ws / "dvc.yaml").is_symlink()
    assert "no_scm" not in (ws / ".dvc" / "config").read_text()
    r = _dvc(ws, "params", "diff")
    assert r.returncode == 0, r.stderr
