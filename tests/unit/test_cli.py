"""`sage-rl` reports bad input in one message, exit status 2, no traceback."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--config-name", "no_such_recipe"], "available: "),
        (["train", "--config-name", "grpo_tiny_cpu", "trainer.no_such_key=1"], "no_such_key"),
        (["train", "--config-name", "grpo_tiny_cpu", "data.train_files=${sage_rl.data:nq-train}"], "nq-train"),
        (["warmstart", "--config-name", "smollm2_cpu", "gold.solver.max_search=2"], "max_search"),
        (["pipeline", "--config-name", "quickstart_cpu", "run.stages=[index,trian]"], "trian"),
    ],
)
def test_cli_reports_bad_recipes_without_a_traceback(argv, message):
    out = subprocess.run([sys.executable, "-m", "sage_rl.cli", *argv], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.startswith("sage-rl: error:") and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def _recipes(*argv: str) -> int:
    from sage_rl.cli import main

    return main(["recipes", *argv])


def test_recipes_ls_lists_every_launchable_recipe_with_a_description(capsys):
    from sage_rl.config import recipes_dir

    assert _recipes("ls") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"# recipes in {recipes_dir()}"
    listed = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines[1:]}
    shipped = {f"{p.parent.name}/{p.stem}" for p in recipes_dir().glob("*/*.yaml")}
    assert set(listed) == shipped  # shared fragments (train/cpu/tiny.yaml) are not recipes of their own
    assert listed["train/grpo_tiny_cpu"].startswith("CPU smoke run")
    assert listed["generate/sage_paper"].startswith("The paper's generation setup")  # after a 4-line launch block


def test_recipes_ls_one_group(capsys):
    assert _recipes("ls", "eval") == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names and all(n.startswith("eval/") for n in names)


def test_recipes_cp_copies_the_defaults_it_needs_so_the_copy_composes(tmp_path, capsys):
    """`--config-path DEST` sees the copy and the `cpu/*.yaml` files its defaults list names."""
    from omegaconf import OmegaConf

    from sage_rl.config import compose, recipes_dir

    assert _recipes("cp", "train/grpo_search_tiny_cpu", str(tmp_path / "mine")) == 0
    out = capsys.readouterr().out
    assert f"sage-rl train --config-path {tmp_path / 'mine'} --config-name grpo_search_tiny_cpu" in out
    assert sorted(p.relative_to(tmp_path / "mine").as_posix() for p in (tmp_path / "mine").rglob("*.yaml")) == [
        "cpu/search.yaml", "cpu/tiny.yaml", "grpo_search_tiny_cpu.yaml"]
    copied = compose(tmp_path / "mine", "grpo_search_tiny_cpu")
    assert OmegaConf.to_container(copied) == OmegaConf.to_container(compose(recipes_dir() / "train",
                                                                           "grpo_search_tiny_cpu"))


def test_recipes_cp_to_a_new_file_name_brings_a_sibling_recipe(tmp_path):
    """sage_paper_google extends the recipe sage_paper_wiki18; a renamed copy loads as `sage-rl eval` would."""
    from sage_rl.eval.config import load_eval_config

    assert _recipes("cp", "eval/sage_paper_google", str(tmp_path / "google_mine.yaml")) == 0
    assert (tmp_path / "sage_paper_wiki18.yaml").is_file()
    assert load_eval_config("google_mine", ["model.path=m"], tmp_path) == load_eval_config(
        "sage_paper_google", ["model.path=m"])


def test_recipes_cp_refuses_to_overwrite_without_force(tmp_path, capsys):
    assert _recipes("cp", "train/grpo_tiny_cpu", str(tmp_path)) == 0
    (tmp_path / "cpu" / "tiny.yaml").write_text("# my edits\n")
    capsys.readouterr()
    assert _recipes("cp", "train/grpo_tiny_cpu", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("sage-rl: error: refusing to overwrite") and "--force" in err and err.count("\n") == 1
    assert (tmp_path / "cpu" / "tiny.yaml").read_text() == "# my edits\n"
    assert _recipes("cp", "train/grpo_tiny_cpu", str(tmp_path), "--force") == 0
    assert (tmp_path / "cpu" / "tiny.yaml").read_text().startswith("# @package _global_")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cp", "train/no_such_recipe", "dest"], "recipes in train: "),
        (["cp", "no_such_group/grpo_tiny_cpu", "dest"], "groups: "),
        (["cp", "grpo_tiny_cpu", "dest"], "expected GROUP/NAME"),
        (["ls", "no_such_group"], "groups: "),
    ],
)
def test_recipes_unknown_names_are_one_line_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _recipes(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sage-rl: error:") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "dest").exists()
