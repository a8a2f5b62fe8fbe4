"""Bad arguments and files given to the CLI: one line naming the fix and exit status 1, never a
traceback, and never a silently wrong result. Every case fails before a model is loaded."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from titans_lsp.cli import main

SAMPLE = {"prompt": "x = ", "groundtruth": "1", "metadata": {"task_id": "t/0", "repository": "r", "file": "a.py"}}


def _write_samples(path, count: int = 3) -> None:
    lines = [json.dumps({**SAMPLE, "metadata": {**SAMPLE["metadata"], "task_id": f"t/{i}"}}) for i in range(count)]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def test_eval_data_named_gz_but_not_gzipped_is_read(tmp_path, capsys):
    data = tmp_path / "dev.jsonl.gz"
    _write_samples(data.with_suffix(".plain"))
    data.write_bytes(data.with_suffix(".plain").read_bytes())  # plain JSONL under a .gz name
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "none", "--report-only"]) == 0
    assert "skipped" not in capsys.readouterr().err


def test_eval_data_gzipped_without_gz_suffix_is_read(tmp_path, capsys):
    gz = tmp_path / "dev.jsonl.gz"
    _write_samples(gz)
    data = tmp_path / "dev.jsonl"
    data.write_bytes(gz.read_bytes())
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "none", "--report-only"]) == 0
    assert "skipped" not in capsys.readouterr().err


def test_eval_data_truncated_gzip_is_one_line_error(tmp_path, capsys):
    data = tmp_path / "dev.jsonl.gz"
    _write_samples(data, count=200)
    data.write_bytes(data.read_bytes()[:-40])  # a download cut short
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "none", "--report-only"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"titans-lsp eval: error: --data {data}: cannot read it") and "Traceback" not in err


@pytest.mark.parametrize("limit", ["0", "-2"])
def test_eval_limit_below_one_is_refused(tmp_path, capsys, limit):
    data = tmp_path / "dev.jsonl"
    _write_samples(data)  # 3 samples: --limit -2 used to evaluate 1 of them (samples[:-2]) without a word
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "none", "--limit", limit,
              "--report-only"])
    assert exit_info.value.code == 2
    assert "argument --limit: must be a whole number >= 1" in capsys.readouterr().err


def test_eval_out_that_cannot_be_created_is_one_line_error(tmp_path, capsys):
    data = tmp_path / "dev.jsonl"
    _write_samples(data)
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output directory should go")  # unwritable even for root
    assert main(["eval", "--data", str(data), "--out", str(blocker / "run1"), "--modes", "none", "--report-only"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"titans-lsp eval: error: --out {blocker / 'run1'}: cannot create it") and "Traceback" not in err


def test_eval_repos_that_is_not_a_directory_fails_before_the_model_loads(tmp_path, capsys):
    data = tmp_path / "dev.jsonl"
    _write_samples(data)
    missing = tmp_path / "no-such-repos"
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "concat", "--limit", "1",
                 "--retrieve", "bm25", "--repos", str(missing), "--model", str(tmp_path / "not-loaded")]) == 1
    assert capsys.readouterr().err.strip() == f"titans-lsp eval: error: --repos {missing}: not a directory"


@pytest.mark.parametrize("config, message", [
    ('{"chunk_size": "x"}', "chunk_size must be an integer, got 'x'"),  # was: '<' not supported between ...
    ('{"lr": "0.5"}', "lr must be a number, got '0.5'"),  # was accepted; failed deep inside torch
    ('{"ntp_normalize": "no"}', "ntp_normalize must be true or false, got 'no'"),  # was accepted as True
    ('{"layers": "31"}', "layers must be a list of layer indices or null, got '31'"),  # was layers [3, 1]
    ('{"depth": 2.5}', "depth must be an integer, got 2.5"),
])
def test_eval_memory_config_with_a_wrong_type_names_the_field(tmp_path, capsys, config, message):
    data = tmp_path / "dev.jsonl"
    _write_samples(data)
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "memory", "--limit", "1",
                 "--memory-config", config, "--model", str(tmp_path / "not-loaded")]) == 1
    assert capsys.readouterr().err.strip() == f"titans-lsp eval: error: --memory-config: {message}"


def _damaged_checkpoints(tmp_path) -> dict[str, object]:
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    (bad_json / "memory.safetensors").write_bytes(b"")
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text(json.dumps({"memory_config": {}, "hidden_size": 8}))
    (cut / "memory.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\": {\"dtype\": \"F32\"")  # cut short
    return {"empty": empty, "bad-json": bad_json, "cut": cut}


@pytest.mark.parametrize("which", ["empty", "bad-json", "cut"])
def test_eval_damaged_memory_checkpoint_is_one_line_before_the_model_loads(tmp_path, capsys, which):
    data = tmp_path / "dev.jsonl"
    _write_samples(data)
    checkpoint = _damaged_checkpoints(tmp_path)[which]
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "memory", "--limit", "1",
                 "--memory-checkpoint", str(checkpoint), "--model", str(tmp_path / "not-loaded")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"titans-lsp eval: error: --memory-checkpoint {checkpoint}: ") and "Traceback" not in err
    assert "titans-lsp train --out" in err  # what makes a good one


def test_prime_damaged_memory_checkpoint_is_one_line_before_indexing(tmp_path, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    checkpoint = _damaged_checkpoints(tmp_path)["cut"]
    assert main(["prime", str(root), "--memory-checkpoint", str(checkpoint), "--cache-dir", str(tmp_path / "c")]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"titans-lsp prime: error: --memory-checkpoint {checkpoint}: ")
    assert "indexed" not in captured.out


def test_train_damaged_memory_checkpoint_is_one_line_before_the_model_loads(tmp_path, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    checkpoint = _damaged_checkpoints(tmp_path)["cut"]
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "ckpt"), "--memory-checkpoint", str(checkpoint),
                 "--model", str(tmp_path / "not-loaded")]) == 1
    assert capsys.readouterr().err.startswith(f"titans-lsp train: error: --memory-checkpoint {checkpoint}: ")


def test_stats_on_another_programs_sqlite_file_refuses_and_leaves_it_alone(tmp_path, capsys):
    import sqlite3

    other = tmp_path / "notes.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()
    before = other.read_bytes()
    assert main(["stats", "--db", str(other)]) == 1  # was: an empty table, and the file gained our tables
    assert capsys.readouterr().err.strip() == (f"titans-lsp stats: error: {other} is not a titans-lsp event store "
                                               "(no schema table); point --db at <cache>/telemetry/events.sqlite3")
    assert other.read_bytes() == before


def test_stats_on_a_directory_is_one_line_error(tmp_path, capsys):
    assert main(["stats", "--db", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"titans-lsp stats: error: {tmp_path} is not a titans-lsp event store") and "Traceback" not in err


def test_stats_plot_where_it_cannot_be_written_is_one_line_error(tmp_path, capsys):
    from titans_lsp.telemetry import connect

    store = tmp_path / "events.sqlite3"
    connect(store).close()  # an empty store of ours
    blocker = tmp_path / "plots"
    blocker.write_text("a file where the plot's directory should be")
    assert main(["stats", "--db", str(store), "--plot", str(blocker / "a.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"titans-lsp stats: error: --plot {blocker / 'a.png'}: cannot write it") and "Traceback" not in err


def test_stats_plot_with_an_unknown_image_format_is_one_line_error(tmp_path, capsys):
    from titans_lsp.telemetry import connect

    store = tmp_path / "events.sqlite3"
    connect(store).close()
    assert main(["stats", "--db", str(store), "--plot", str(tmp_path / "a.xyz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"titans-lsp stats: error: --plot {tmp_path / 'a.xyz'}: Format 'xyz' is not supported")
    assert "png" in err and "Traceback" not in err


@pytest.mark.parametrize("config", ['[1]', '"titans"'])
def test_train_memory_config_that_is_not_an_object_is_one_line_error(tmp_path, capsys, config):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "ckpt"), "--memory-config", config,
                 "--model", str(tmp_path / "not-loaded")]) == 1
    assert capsys.readouterr().err.strip() == \
        "titans-lsp train: error: --memory-config: expected a JSON object of MemoryConfig fields"


def test_serve_log_file_that_cannot_be_written_is_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the log's directory should be")
    assert main(["serve", "--stdio", "--log-file", str(blocker / "serve.log")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"titans-lsp serve: error: --log-file {blocker / 'serve.log'}: cannot write it")
    assert "--log-file -" in err and "Traceback" not in err


class _RunsCode:
    """A pickle that runs code when loaded: what a crafted optimizer.pt in someone's --out could hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("damaged", ["optimizer.pt", "memory.safetensors", "trainer_state.json", "crafted optimizer.pt"])
def test_train_resume_from_a_damaged_checkpoint_is_one_line_error(tiny_llama_dir, tmp_path, capsys, damaged):
    repos = []
    for r in range(3):
        repo = tmp_path / f"repo{r}"
        (repo / "pkg").mkdir(parents=True)
        (repo / "pkg" / "__init__.py").write_text(f"def helper_{r}(x):\n    return x + {r}\n")
        (repo / "pkg" / "use.py").write_text(f"from pkg import helper_{r}\n\n\ndef run(y):\n    return helper_{r}(y)\n")
        repos.append(str(repo))
    out = tmp_path / "run"
    common = ["train", "--model", str(tiny_llama_dir), "--device", "cpu", "--data", *repos, "--out", str(out),
              "--eval-every", "1", "--checkpoint-every", "1", "--warmup-steps", "1", "--no-progress",
              "--memory-config", json.dumps({"memory_dim": 16, "layers": [1, 3]})]
    assert main([*common, "--max-steps", "1"]) == 0
    marker = tmp_path / "code-ran"
    if damaged.startswith("crafted"):
        damaged = damaged.split()[1]
        torch.save({"optimizer": _RunsCode(marker)}, out / damaged)  # loaded with weights_only: refused, not run
    else:
        path = out / damaged
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a copy cut short, a crash mid-write
    capsys.readouterr()
    assert main([*common, "--max-steps", "2", "--resume"]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the model's loading bar
    assert last.startswith(f"titans-lsp train: error: cannot resume {out}: {damaged} is damaged") and "Traceback" not in err
    assert last.endswith("train into another --out to start over")
    assert not marker.exists()


def test_eval_build_out_that_cannot_be_written_fails_before_reading_repositories(tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("def f():\n    return 1\n")
    blocker = tmp_path / "data"
    blocker.write_text("a file where the dataset's directory should be")
    assert main(["eval", "build", "--out", str(blocker / "dev.jsonl"), "--dir", str(repo)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"titans-lsp eval: error: --out {blocker / 'dev.jsonl'}: cannot write it") and "Traceback" not in err
    assert "samples" not in err  # refused before any repository was read


def test_eval_build_out_that_is_a_directory_is_refused(tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("def f():\n    return 1\n")
    assert main(["eval", "build", "--out", str(tmp_path), "--dir", str(repo)]) == 1
    assert capsys.readouterr().err.strip() == \
        f"titans-lsp eval: error: --out {tmp_path}: a directory; give a file path (a name inside it)"


def test_eval_build_that_fails_leaves_no_empty_dataset(tmp_path, capsys):
    out = tmp_path / "dev.jsonl"
    assert main(["eval", "build", "--out", str(out), "--pypi", "notaspec"]) == 1
    assert "pin an exact version" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--files", "--lines", "--max-new-tokens"])
def test_bench_counts_below_one_are_refused(capsys, flag):
    with pytest.raises(SystemExit) as exit_info:  # --files 0 printed a table of None after loading the model
        main(["bench", "--modes", "none", flag, "0"])
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be a whole number >= 1" in capsys.readouterr().err


def test_bench_out_that_cannot_be_written_fails_before_the_run(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results' directory should be")
    # was: the whole replay ran, then write_json raised FileExistsError
    assert main(["bench", "--modes", "none", "--out", str(blocker / "bench.json"),
                 "--model", str(tmp_path / "not-loaded")]) == 1
    assert capsys.readouterr().err.startswith(f"titans-lsp bench: error: --out {blocker / 'bench.json'}: cannot write it")


def test_doctor_no_load_fails_a_gguf_that_is_not_one(tmp_path, capsys):
    fake = tmp_path / "model.gguf"
    fake.write_text("version https://git-lfs.github.com/spec/v1\n")  # a Git LFS pointer, not the weights
    assert main(["doctor", "--model", str(fake), "--no-load"]) == 1  # was: "ok model ... all checks passed"
    fails = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert fails == [f"FAIL  model            {fake} is not a GGUF file (it does not start with 'GGUF'); "
                     "re-download it, or pass a model directory or 'default'"]


def test_prime_bad_memory_config_is_refused_before_indexing(tmp_path, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    assert main(["prime", str(root), "--memory-config", '{"update_rule": "adamw"}', "--cache-dir", str(tmp_path / "c")]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("titans-lsp prime: error: --memory-config: update_rule must be one of")
    assert "indexed" not in captured.out  # was: the whole workspace indexed first


def test_eval_repos_without_retrieve_is_refused(tmp_path, capsys):
    data = tmp_path / "dev.jsonl"
    _write_samples(data)
    repos = tmp_path / "repos"
    repos.mkdir()
    # was: --repos ignored, the rows read each sample's crossfile_context list without a word
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "concat", "--repos", str(repos),
                 "--model", str(tmp_path / "not-loaded")]) == 1
    assert capsys.readouterr().err.strip() == (
        "titans-lsp eval: error: --repos is read only by --retrieve: add --retrieve [R ...] to retrieve over it, "
        "or drop --repos to use each sample's crossfile_context list")


def test_eval_data_that_is_a_directory_says_so(tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--modes", "none",
                 "--report-only"]) == 1  # was: "no such file"
    assert capsys.readouterr().err.strip() == (
        f"titans-lsp eval: error: --data {tmp_path}: a directory; give the JSONL file (or make one with "
        "`titans-lsp eval build`)")


@pytest.mark.parametrize("budget", ["-1", "x"])
def test_eval_context_budget_below_zero_is_refused(tmp_path, capsys, budget):
    with pytest.raises(SystemExit) as exit_info:  # was: accepted; CompletionSettings failed after the model loaded
        main(["eval", "--data", str(tmp_path / "dev.jsonl"), "--out", str(tmp_path / "out"), "--context-budget", budget])
    assert exit_info.value.code == 2
    assert f"argument --context-budget: must be a whole number >= 0, got '{budget}'" in capsys.readouterr().err


def test_eval_context_budget_over_half_the_window_is_refused_before_the_model_loads(tmp_path, capsys):
    data = tmp_path / "dev.jsonl"
    _write_samples(data)
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "concat", "--max-seq", "1000",
                 "--context-budget", "600", "--model", str(tmp_path / "not-loaded")]) == 1
    assert capsys.readouterr().err.strip() == (
        "titans-lsp eval: error: --context-budget 600: at most 500 (half of --max-seq 1000, so the prefix keeps room)")


def test_eval_window_too_small_for_a_prompt_is_refused_before_the_model_loads(tmp_path, capsys):
    data = tmp_path / "dev.jsonl"
    _write_samples(data)  # was: "ValueError: empty prompt" with a traceback, after the model loaded
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "none", "--max-seq", "40",
                 "--context-budget", "0", "--model", str(tmp_path / "not-loaded")]) == 1
    assert capsys.readouterr().err.strip() == (
        "titans-lsp eval: error: --max-seq 40: at least 114 (the 50 generated tokens and a prompt of 64)")


def test_eval_context_budget_zero_turns_the_block_off_as_in_the_editor(tmp_path):
    data = tmp_path / "dev.jsonl"
    _write_samples(data)
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "none", "--context-budget", "0",
                 "--report-only"]) == 0


@pytest.mark.parametrize("speed", ["0", "-2", "1e9", "nan", "inf"])
def test_bench_speed_outside_its_range_is_refused(capsys, speed):
    with pytest.raises(SystemExit) as exit_info:  # 0 divided by zero mid-run; -2 typed every key at once
        main(["bench", "--modes", "none", "--speed", speed])
    assert exit_info.value.code == 2
    assert f"argument --speed: must be a number > 0 and <= 100, got '{speed}'" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--memory-config", '{"update_rule": "adamw"}'], "--memory-config: update_rule must be one of"),
    (["--memory-config", '{"update_rule": "ntp"}'], "--memory-config: the ntp rule trains its memory at test time"),
    (["--gate-floor", "1.5"], "--gate-floor: gate_floor must be in [0, 1), got 1.5"),
])
def test_train_memory_config_errors_name_the_flag_as_the_other_commands(tmp_path, capsys, flags, message):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "ckpt"), *flags,
                 "--model", str(tmp_path / "not-loaded")]) == 1  # was: "memory config: ..." for all three
    assert capsys.readouterr().err.startswith(f"titans-lsp train: error: {message}")


def test_a_memory_config_that_does_not_fit_the_model_is_one_line_error(tiny_llama_dir, tmp_path, capsys):
    """Memory layers the model does not have pass the config's own checks; installing the memory fails
    once the model is loaded: one line naming the model and the fix, not a BackendError traceback."""
    data = tmp_path / "dev.jsonl"
    _write_samples(data, count=1)
    rc = main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "memory", "--model",
               str(tiny_llama_dir), "--device", "cpu", "--memory-config", json.dumps({"layers": [99]}), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # (transformers' weight-loading bar comes before it)
    assert last.startswith("titans-lsp eval: error: cannot install the Titans memory") and "layer 99" in last


@pytest.mark.parametrize("flag, value, says", [
    ("--max-steps", "0", ">= 1"), ("--batch-size", "-1", ">= 1"), ("--seq-len", "1", ">= 2"),
    ("--eval-every", "0", ">= 1"), ("--checkpoint-every", "0", ">= 1"), ("--warmup-steps", "-5", ">= 0"),
    ("--max-files-per-repo", "0", ">= 1"), ("--heldout-max-files", "0", ">= 1"), ("--heldout", "-0.2", ">= 0"),
    ("--lr", "nan", "> 0"), ("--lr", "0", "> 0"), ("--weight-decay", "-1", ">= 0"), ("--gate-lr-scale", "inf", "> 0"),
    ("--time-limit", "-3", "> 0"),
])
def test_train_numbers_out_of_range_are_refused_at_parse_time(tmp_path, capsys, flag, value, says):
    """--eval-every 0 / --checkpoint-every 0 reached ``step % every`` (model/training.py) at the first step,
    after the data was read and the model loaded: a ZeroDivisionError. Values with no meaning are refused
    before anything is read or loaded."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "out"), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be a" in err and says in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--debounce-ms", "--think-ms"])
@pytest.mark.parametrize("value", ["-100", "nan"])
def test_bench_times_below_zero_are_refused_at_parse_time(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", flag, value, "--out", str(tmp_path / "b.json")])
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be a number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("extra, named", [(["--pypi", "attrs==23.2.0"], "--pypi"), (["--per-repo", "5"], "--per-repo"),
                                          (["--retriever", "dense", "--language", "python"], "--language, --retriever")])
def test_eval_build_flags_without_build_are_refused(tmp_path, capsys, extra, named):
    """Without `build` they were ignored: the user's --per-repo 5 evaluated the whole file as if unsaid."""
    data = tmp_path / "dev.jsonl"
    _write_samples(data)
    rc = main(["eval", "--data", str(data), "--out", str(tmp_path / "out"), "--modes", "none", "--report-only", *extra])
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == f"titans-lsp eval: error: {named}: only read by `titans-lsp eval build` (add `build` after `eval`)"


def test_eval_build_refuses_the_flags_of_an_evaluation(tmp_path, capsys):
    rc = main(["eval", "build", "--dir", str(tmp_path), "--out", str(tmp_path / "b.jsonl"), "--repos", str(tmp_path)])
    assert rc == 1 and "--repos: not read by `eval build`" in capsys.readouterr().err
