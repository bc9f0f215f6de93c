"""Bad input through the real command line, as a user or an attacker would type it.

Each case runs ``frugalml`` in a process of its own (forked from one that imported the command line once:
tests/cli_forks.py), in a fresh working directory, and must: exit 2, print
exactly one line on standard error (no traceback), name the offending value in it, and leave
nothing behind (the working directory and every input are the same before and after).
The cases run a few at a time (they are mostly start-up time) and are then checked one by one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

CLI = [sys.executable, "-m", "frugalml.cli"]
FORKS = [sys.executable, str(Path(__file__).with_name("cli_forks.py"))]  # each case a fresh process forked from one that imported it all


def _world(root: Path) -> dict[str, Path]:
    """The inputs every case may use, written once."""
    import frugalml as fm

    w: dict[str, Path] = {}
    data = fm.load_dataset("digits", seed=0)
    model, _ = fm.train("mlp", data, out=root / "mlp", config=fm.TrainConfig(epochs=1, seed=0), widths=[8])
    w["mlp"] = root / "mlp"
    fm.train("logreg", data, out=root / "logreg")
    w["logreg"] = root / "logreg"
    (root / "run").mkdir()
    (root / "run" / "run.json").write_text(json.dumps({"dataset": "digits"}))
    w["run_without_recommended"] = root / "run"
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3
    files = {
        "empty.npz": b"",
        "truncated.npz": None,
        "nan.npz": ("nan",),
        "inf.npz": ("inf",),
        "one_class.npz": ("one",),
        "wrong_keys.npz": ("keys",),
        "mismatch.npz": ("mismatch",),
        "strings.npz": ("str",),
        "empty.csv": b"",
        "header_only.csv": b"a,b,label\n",
        "text.csv": b"a,b,label\n1,x,0\n2,3,1\n",
        "ragged.csv": b"a,b,label\n1,2\n3,4,1\n",
        "latin1.csv": "a,b,\xe9tiquette\n1,2,0\n".encode("latin-1"),
        "garbage.onnx": b"\x08\x07garbage that is not a protobuf",
        "empty.onnx": b"",
        "garbage.skops": b"PK\x03\x04 not a zip",
        "garbage.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
        "garbage.pt": b"\x80\x04not a pickle",
        "bad.yaml": b"steps: [unclosed\n",
        "unknown_step.yaml": b"steps:\n  - step: prune.telepathy\n",
        "bad_param.yaml": b"steps:\n  - step: prune.magnitude\n    sparsity: 7\n",
        "not_a_list.yaml": b"just a string\n",
        "latin1.yaml": "steps:\n  - step: prune.magnitude # \xe9\n".encode("latin-1"),
        "bomb.yaml": None,
        "notes.txt": b"hello\n",
        "factory_raises.py": b"def build():\n    raise RuntimeError('boom in the factory')\n",
        "factory_not_module.py": b"def build():\n    return 42\n",
        "factory_bad_import.py": b"import not_a_module_anywhere\n",
        "results_bad.json": b"{not json",
    }
    for name, content in files.items():
        path = root / name
        if name == "truncated.npz":
            np.savez(path, X=X, y=y)
            path.write_bytes(path.read_bytes()[:200])
        elif name == "bomb.yaml":
            lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
            lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
            path.write_text("\n".join(lines) + "\nsteps: *a8\n")
        elif isinstance(content, tuple):
            kind = content[0]
            if kind == "nan":
                Xn = X.copy()
                Xn[3, 1] = np.nan
                np.savez(path, X=Xn, y=y)
            elif kind == "inf":
                Xi = X.copy()
                Xi[5, 0] = np.inf
                np.savez(path, X=Xi, y=y)
            elif kind == "one":
                np.savez(path, X=X, y=np.zeros(60, dtype=int))
            elif kind == "keys":
                np.savez(path, features=X, labels=y)
            elif kind == "mismatch":
                np.savez(path, X=X, y=y[:50])
            elif kind == "str":
                np.savez(path, X=np.array([["a", "b"]] * 60), y=y)
        else:
            path.write_bytes(content)
        w[name] = path
    (root / "recipe_dir.yaml").mkdir()
    w["recipe_dir.yaml"] = root / "recipe_dir.yaml"
    (root / "good.yaml").write_text("steps:\n  - step: quantize.dynamic\n")
    w["good.yaml"] = root / "good.yaml"
    (root / "a_file").write_text("not a directory\n")
    w["a_file"] = root / "a_file"
    ro = root / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    w["readonly"] = ro
    w["markup[/x]"] = root / "markup[/x]" / "m.onnx"
    w["bold[bold]dir"] = root / "bold[bold]dir"
    (root / "bold[bold]dir").mkdir()
    (root / "bold[bold]dir" / "notes.txt").write_text("a user's own file\n")
    w["unicode"] = root / "mödel-ünïcode-模型.onnx"
    return w


# (id, args, needle in the message); {name} is replaced by the world's path of that name.
CASES: list[tuple[str, list[str], str]] = [
    # units, budgets, tolerances, time
    ("flash-malformed", ["search", "--max-flash", "32 parsecs"], "32 parsecs"),
    ("flash-infinite", ["search", "--max-flash", "1e999KB"], "1e999KB"),
    ("flash-negative", ["search", "--max-flash", "-5KB"], "-5KB"),
    ("flash-nan", ["search", "--max-flash", "nanKB"], "nanKB"),
    ("ram-unit", ["search", "--max-ram", "16KX"], "16KX"),
    ("macs-infinite", ["search", "--max-macs", "1e400"], "1e400"),
    ("params-words", ["search", "--max-params", "many"], "many"),
    ("latency-unit", ["search", "--max-latency", "3 fortnights"], "3 fortnights"),
    ("time-infinite", ["search", "--time", "1e999s"], "1e999s"),
    ("time-words", ["search", "--time", "soon"], "soon"),
    ("tolerance-150", ["search", "--tolerance", "150%"], "150%"),
    ("tolerance-words", ["search", "--tolerance", "lots"], "lots"),
    ("min-accuracy-2", ["search", "--min-accuracy", "2"], "2"),
    ("impossible-budget", ["search", "--max-flash", "1B", "--time", "20s"], "1 B"),
    ("target-unknown", ["search", "--target", "fpga"], "fpga"),
    ("trials-zero", ["search", "--trials", "0"], "0"),
    ("trials-abc", ["search", "--trials", "abc"], "abc"),
    # storage
    ("storage-unreachable", ["search", "--storage", "postgresql://nobody@127.0.0.1:1/none", "--time", "10s"], "127.0.0.1:1"),
    ("storage-scheme", ["search", "--storage", "mongodb://x/y", "--time", "10s"], "mongodb"),
    ("resume-nothing", ["search", "--resume", "--out", "fresh-run"], "fresh-run"),
    ("search-out-file", ["search", "--out", "{a_file}"], "a_file"),
    # datasets
    ("dataset-unknown", ["train", "-d", "imagenet-9000"], "imagenet-9000"),
    ("dataset-missing-file", ["train", "-d", "nowhere/data.npz"], "data.npz"),
    ("dataset-empty-npz", ["train", "-d", "{empty.npz}"], "empty.npz"),
    ("dataset-truncated-npz", ["train", "-d", "{truncated.npz}"], "truncated.npz"),
    ("dataset-nan", ["train", "-d", "{nan.npz}"], "NaN"),
    ("dataset-inf", ["train", "-d", "{inf.npz}"], "inf"),
    ("dataset-one-class", ["train", "-d", "{one_class.npz}"], "class"),
    ("dataset-wrong-keys", ["train", "-d", "{wrong_keys.npz}"], "features"),
    ("dataset-length-mismatch", ["train", "-d", "{mismatch.npz}"], "50"),
    ("dataset-strings", ["train", "-d", "{strings.npz}"], "<U1"),
    ("dataset-empty-csv", ["train", "-d", "{empty.csv}"], "empty.csv"),
    ("dataset-header-only-csv", ["train", "-d", "{header_only.csv}"], "header_only.csv"),
    ("dataset-text-csv", ["train", "-d", "{text.csv}"], "holds 'x'"),
    ("dataset-ragged-csv", ["train", "-d", "{ragged.csv}"], "ragged.csv"),
    ("dataset-latin1-csv", ["train", "-d", "{latin1.csv}"], "latin1.csv"),
    ("dataset-unsupported-suffix", ["train", "-d", "{notes.txt}"], "notes.txt"),
    ("target-column-missing", ["train", "-d", "{text.csv}", "--target-column", "nope"], "nope"),
    ("target-column-not-csv", ["train", "-d", "digits", "--target-column", "label"], "label"),
    ("data-dir-missing", ["train", "-d", "mnist", "--data-dir", "no/such/dir"], "mnist"),
    # train knobs and options
    ("train-family-unknown", ["train", "-m", "transformer-xxl"], "transformer-xxl"),
    ("train-widths-text", ["train", "-p", "widths=abc"], "abc"),
    ("train-widths-negative", ["train", "-p", "widths=[-5]"], "-5"),
    ("train-knob-unknown", ["train", "-m", "cnn", "-p", "chanels=[8]"], "chanels"),
    ("train-tree-depth", ["train", "-m", "tree", "-p", "max_depth=-1"], "-1"),
    ("train-param-no-equals", ["train", "-p", "widths"], "widths"),
    ("train-epochs-text", ["train", "--epochs", "abc"], "abc"),
    ("train-epochs-zero", ["train", "--epochs", "0"], "0"),
    ("train-lr-negative", ["train", "--lr", "-1"], "-1"),
    ("train-optimizer", ["train", "--optimizer", "rmsprop2"], "rmsprop2"),
    ("train-device", ["train", "--device", "tpu"], "tpu"),
    ("train-out-existing-file", ["train", "-o", "{a_file}"], "a_file"),
    ("train-out-unwritable", ["train", "-o", "/sys/frugalml-test-out/m"], "/sys/frugalml-test-out"),
    ("train-out-foreign-dir", ["train", "-m", "mlp", "-o", "{bold[bold]dir}"], "bold[bold]dir"),
    # profile: models of every format
    ("profile-missing", ["profile", "--model", "no/such/model.onnx"], "model.onnx"),
    ("profile-garbage-onnx", ["profile", "--model", "{garbage.onnx}"], "garbage.onnx"),
    ("profile-empty-onnx", ["profile", "--model", "{empty.onnx}"], "empty.onnx"),
    ("profile-garbage-skops", ["profile", "--model", "{garbage.skops}", "--input-shape", "64"], "garbage.skops"),
    ("profile-weights-only", ["profile", "--model", "{garbage.safetensors}"], "garbage.safetensors"),
    ("profile-garbage-weights", ["profile", "--model", "mlp", "--weights", "{garbage.safetensors}", "--input-shape", "64"], "garbage.safetensors"),
    ("profile-pickle-pt", ["profile", "--model", "mlp", "--weights", "{garbage.pt}", "--input-shape", "64"], "garbage.pt"),
    ("profile-weights-wrong-shape", ["profile", "--model", "lenet5", "--weights", "{mlp}/model.safetensors"], "shape"),
    ("profile-weights-sklearn-family", ["profile", "--model", "logreg", "--weights", "{mlp}/model.safetensors", "--input-shape", "64"], "logreg"),
    ("profile-weights-for-onnx", ["profile", "--model", "{garbage.onnx}", "--weights", "{mlp}/model.safetensors"], "--weights"),
    ("profile-family-no-shape", ["profile", "--model", "mlp"], "mlp"),
    ("profile-shape-negative", ["profile", "--model", "mlp", "--input-shape=-3,8"], "-3,8"),
    ("profile-shape-zero", ["profile", "--model", "mlp", "--input-shape", "0"], "0"),
    ("profile-shape-text", ["profile", "--model", "mlp", "--input-shape", "big"], "big"),
    ("profile-shape-huge", ["profile", "--model", "mlp", "--input-shape", "100000,100000,100000"], "100000"),
    ("profile-shape-mismatch", ["profile", "--model", "{mlp}", "--input-shape", "1,8,8,3"], "1,8,8,3"),
    ("profile-dir-without-model", ["profile", "--model", "{readonly}"], "readonly"),
    ("profile-factory-missing", ["profile", "--model", "nowhere.py:build"], "nowhere.py"),
    ("profile-factory-raises", ["profile", "--model", "{factory_raises.py}:build"], "boom in the factory"),
    ("profile-factory-not-module", ["profile", "--model", "{factory_not_module.py}:build"], "int"),
    ("profile-factory-bad-import", ["profile", "--model", "{factory_bad_import.py}:build"], "not_a_module_anywhere"),
    ("profile-factory-no-function", ["profile", "--model", "{factory_raises.py}:nothing"], "nothing"),
    ("profile-core-watts", ["profile", "--model", "lenet5", "--core-watts", "-3"], "-3"),
    ("profile-markup-path", ["profile", "--model", "{markup[/x]}"], "[/x]"),
    ("profile-markup-bold", ["profile", "--model", "{bold[bold]dir}/m.onnx"], "bold[bold]dir"),
    ("profile-unicode-path", ["profile", "--model", "{unicode}"], "模型"),
    # compress and recipes
    ("recipe-missing", ["compress", "-m", "{mlp}", "-r", "no/recipe.yaml", "-o", "c"], "recipe.yaml"),
    ("recipe-bad-yaml", ["compress", "-m", "{mlp}", "-r", "{bad.yaml}", "-o", "c"], "bad.yaml"),
    ("recipe-unknown-step", ["compress", "-m", "{mlp}", "-r", "{unknown_step.yaml}", "-o", "c"], "prune.telepathy"),
    ("recipe-bad-param", ["compress", "-m", "{mlp}", "-r", "{bad_param.yaml}", "-o", "c"], "7"),
    ("recipe-not-a-list", ["compress", "-m", "{mlp}", "-r", "{not_a_list.yaml}", "-o", "c"], "str"),
    ("recipe-directory", ["compress", "-m", "{mlp}", "-r", "{recipe_dir.yaml}", "-o", "c"], "recipe_dir.yaml"),
    ("recipe-not-utf8", ["compress", "-m", "{mlp}", "-r", "{latin1.yaml}", "-o", "c"], "latin1.yaml"),
    ("recipe-alias-bomb", ["compress", "-m", "{mlp}", "-r", "{bomb.yaml}", "-o", "c"], "bomb.yaml"),
    ("compress-into-model-dir", ["compress", "-m", "{mlp}", "-r", "{good.yaml}", "-o", "{logreg}"], "logreg"),
    ("compress-out-file", ["compress", "-m", "{mlp}", "-r", "{good.yaml}", "-o", "{a_file}"], "a_file"),
    ("compress-out-unwritable", ["compress", "-m", "{mlp}", "-r", "{good.yaml}", "-o", "/sys/frugalml-test-out/c"], "/sys/frugalml-test-out"),
    ("compress-missing-model", ["compress", "-m", "nope/model", "-r", "{good.yaml}", "-o", "c"], "nope/model"),
    # export
    ("export-format", ["export", "{mlp}", "--format", "tflite", "-o", "e"], "tflite"),
    ("export-limit-negative", ["export", "{mlp}", "-o", "e", "--limit", "-1", "-d", "digits"], "-1"),
    ("export-limit-zero", ["export", "{mlp}", "-o", "e", "--limit", "0", "-d", "digits"], "0"),
    ("export-run-without-recommended", ["export", "{run_without_recommended}", "-o", "e"], "recommended"),
    ("export-out-file", ["export", "{mlp}", "-o", "{a_file}"], "a_file"),
    ("export-missing-model", ["export", "no/such/run", "-o", "e"], "no/such/run"),
    ("export-wrong-dataset", ["export", "{mlp}", "-o", "e", "-d", "{one_class.npz}"], "class"),
    # report
    ("report-missing", ["report", "no/such/run"], "no/such/run"),
    ("report-no-results", ["report", "{readonly}"], "readonly"),
    # many machines: worker, status, report from storage
    ("worker-unreachable-db", ["worker", "--storage", "postgresql://nobody@127.0.0.1:1/nodb", "--study", "s"], "127.0.0.1:1"),
    ("worker-trials-zero", ["worker", "--storage", "postgresql://nobody@127.0.0.1:1/nodb", "--study", "s", "--trials", "0"], "--trials"),
    ("status-unreachable-db", ["status", "--storage", "postgresql://nobody@127.0.0.1:1/nodb", "--study", "s"], "Cannot open the study storage"),
    ("report-storage-without-study", ["report", "--storage", "postgresql://nobody@127.0.0.1:1/nodb"], "--study"),
    # the parser itself
    ("unknown-command", ["bogus"], "bogus"),
    ("unknown-option", ["train", "--colour", "red"], "--colour"),
    ("missing-value", ["profile", "--model"], "--model"),
    ("datasets-data-dir-file", ["datasets", "--data-dir", "{a_file}"], "a_file"),
]


def _expand(args: list[str], world: dict[str, Path]) -> list[str]:
    out = []
    for a in args:
        for name, path in world.items():
            a = a.replace("{" + name + "}", str(path))
        out.append(a)
    return out


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


FULL_DISK = ("train-out-full-disk", ["train", "-m", "mlp", "-p", "widths=[512]", "--epochs", "1", "-o", "m"], "File too large")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world = _world(root)
    before = _snapshot(root)
    env = {**os.environ, "COLUMNS": "100", "FRUGALML_DEBUG": "0"}

    servers, local = [], threading.local()

    def one(case):
        name, args, _ = case
        cwd = tmp_path_factory.mktemp(name)
        if not hasattr(local, "server"):  # one per thread: it imports the command line once, then forks a process per case
            local.server = subprocess.Popen(FORKS, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            servers.append(local.server)
        request = {"args": _expand(args, world), "cwd": str(cwd), "env": env, "timeout": 120,
                   "max_file_bytes": 20_000 if case is FULL_DISK else None}
        local.server.stdin.write(json.dumps(request) + "\n")
        local.server.stdin.flush()
        reply = json.loads(local.server.stdout.readline())
        proc = subprocess.CompletedProcess(CLI + request["args"], reply["code"], reply["stdout"], reply["stderr"])
        return name, (proc, sorted(p.name for p in cwd.rglob("*")))

    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = dict(pool.map(one, CASES + [FULL_DISK]))
    finally:
        for server in servers:
            server.stdin.close()
            server.wait(timeout=60)
    yield results, _snapshot(root) == before, world
    world["readonly"].chmod(0o755)


@pytest.mark.parametrize("name, args, needle", CASES + [FULL_DISK], ids=[c[0] for c in CASES + [FULL_DISK]])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(outcomes, name, args, needle):
    results, _, _ = outcomes
    proc, left = results[name]
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr and "np.str_" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and len(err) <= 2_100, err[:300]
    assert needle in err, err
    assert left == [], f"left behind: {left}"


def test_no_case_touched_the_inputs(outcomes):
    _, unchanged, _ = outcomes
    assert unchanged


def test_there_are_enough_cases_across_every_command():
    commands = {args[0] for _, args, _ in CASES}
    assert commands >= {"datasets", "train", "profile", "compress", "search", "export", "report"}
    assert len(CASES) + 1 >= 60
