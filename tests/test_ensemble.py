"""Ensembles: exact combination rules, learned weights, the file format, evaluation and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ferkit import create_model
from ferkit.cli import main
from ferkit.errors import ModelError
from ferkit.models.checkpoint import save_torch
from ferkit.models.ensemble import (
    Ensemble,
    build_ensemble,
    fit_weights,
    load_ensemble,
    load_torch,
    save_ensemble,
)
from ferkit.models.registry import ModelMeta
from ferkit.models.transforms import forward_tta
from ferkit.training.checkpoint import make_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_member(path, seed: int, temperature: float = 1.0):
    torch.manual_seed(seed)
    save_torch(
        make_checkpoint(create_model("vgg_fer_w16"), ModelMeta("vgg_fer_w16", temperature=temperature)), path
    )
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    d = tmp_path_factory.mktemp("members")
    return [save_member(d / f"m{i}.pt", i, temperature=t) for i, t in enumerate((1.0, 1.5, 0.8))]


@pytest.fixture(scope="module")
def faces():
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8))


@pytest.mark.parametrize("tta", ["center", "ten_crop"])
def test_prob_mode_is_exactly_the_mean_of_member_softmax(members, faces, tta):
    e = load_ensemble_from(members, "prob")
    with torch.inference_mode():
        want = torch.stack(
            [
                torch.softmax(forward_tta(m, faces, meta, tta) / meta.temperature, -1)
                for m, meta in zip(e.members, e.metas)
            ]
        ).mean(0)
        got = e.predict_proba(faces, tta)
    assert torch.equal(got, want)
    assert torch.allclose(got.sum(-1), torch.ones(len(faces)))


def test_logit_mode_is_the_softmax_of_the_mean_logit(members, faces):
    e = load_ensemble_from(members, "logit")
    with torch.inference_mode():
        mean_logit = torch.stack(
            [forward_tta(m, faces, meta, "mirror") / meta.temperature for m, meta in zip(e.members, e.metas)]
        ).mean(0)
        assert torch.equal(e.predict_proba(faces, "mirror"), torch.softmax(mean_logit, -1))


def test_learned_mode_weights_the_member_probabilities(members, faces):
    e = load_ensemble_from(members, "learned", weights=[2.0, 1.0, 1.0])
    assert e.weights.tolist() == pytest.approx([0.5, 0.25, 0.25])
    with torch.inference_mode():
        p = torch.softmax(e.member_logits(faces), -1)
        assert torch.allclose(e.predict_proba(faces), 0.5 * p[0] + 0.25 * p[1] + 0.25 * p[2], atol=1e-7)


def load_ensemble_from(paths, combine, weights=None):
    singles = [load_torch(p) for p in paths]
    return Ensemble(
        [s.members[0] for s in singles], [s.metas[0] for s in singles], combine=combine, weights=weights
    )


def test_fit_weights_finds_the_informative_member():
    rng = np.random.default_rng(0)
    y = torch.as_tensor(rng.integers(0, 7, 300))
    good = torch.full((300, 7), 0.02)
    good[torch.arange(300), y] = 0.88
    noise = torch.softmax(torch.as_tensor(rng.normal(size=(2, 300, 7)), dtype=torch.float32), -1)
    w = fit_weights(torch.cat([noise[:1], good[None], noise[1:]]), y)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert w[1] > 0.9
    assert torch.allclose(fit_weights(good[None].expand(2, -1, -1), y), torch.tensor([0.5, 0.5]))


def test_file_round_trip_is_plain_and_safe(members, faces, tmp_path):
    ens = build_ensemble(members, combine="prob")
    path = tmp_path / "ens.pt"
    save_ensemble(ens, path)
    raw = torch.load(path, weights_only=True)  # plain tensors and dicts only
    assert raw["format"] == "ferkit-ensemble" and [m["name"] for m in raw["members"]] == ["m0", "m1", "m2"]
    assert set(raw["members"][0]) == {"name", "source", "meta", "model", "weights_sha256"}  # no optimizer
    loaded = load_ensemble(path)
    with torch.inference_mode():
        assert torch.equal(
            loaded.predict_proba(faces), load_ensemble_from(members, "prob").predict_proba(faces)
        )
    assert isinstance(load_torch(path), Ensemble) and len(load_torch(members[0]).members) == 1


def test_bad_members_fail_loudly(members, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        build_ensemble([tmp_path / "nope.pt"])
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="not a readable"):
        build_ensemble([tmp_path / "junk.pt"])
    save_ensemble(build_ensemble(members[:2]), tmp_path / "e.pt")
    with pytest.raises(ModelError, match="is an ensemble"):
        build_ensemble([tmp_path / "e.pt"])
    with pytest.raises(ModelError, match="combination"):
        build_ensemble(members, combine="median")
    torch.manual_seed(0)
    odd = make_checkpoint(create_model("vgg_fer_w16"), ModelMeta("vgg_fer_w16", classes=list("abcdefg")))
    save_torch(odd, tmp_path / "odd.pt")
    with pytest.raises(ModelError, match="classes"):
        build_ensemble([members[0], tmp_path / "odd.pt"])


def test_evaluate_scores_an_ensemble_and_each_member(members, tmp_path):
    from ferkit.evaluation.scorers import load_scorer

    path = tmp_path / "ens.pt"
    save_ensemble(build_ensemble(members), path)
    scorer = load_scorer(path)
    images = np.random.default_rng(1).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    probs, per_member = scorer.proba_with_members(images, "center")
    assert list(per_member) == ["m0", "m1", "m2"] and list(scorer.members()) == ["m0", "m1", "m2"]
    assert np.allclose(probs, np.mean(list(per_member.values()), axis=0), atol=1e-6)
    for name, m in scorer.members().items():  # the member scorers agree with the side-by-side numbers
        assert np.allclose(m.predict_proba(images, "center"), per_member[name], atol=1e-6)
    assert np.allclose(scorer.predict_proba(images, "center"), probs)


def test_cli_build(members, tmp_path, fer_folders, capsys):
    out = tmp_path / "ens.pt"
    assert (
        main(
            [
                "ensemble",
                "build",
                "--member",
                str(members[0]),
                str(members[1]),
                "--member",
                str(members[2]),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert load_ensemble(out).combine == "prob" and len(load_ensemble(out).members) == 3
    learned = tmp_path / "learned.pt"
    assert (
        main(
            [
                "ensemble",
                "build",
                "--member",
                *map(str, members[:2]),
                "-o",
                str(learned),
                "--combine",
                "learned",
                "--data",
                str(fer_folders),
                "--tta",
                "center",
            ]
        )
        == 0
    )
    raw = torch.load(learned, weights_only=True)
    assert raw["fit"]["split"] == "PublicTest" and sum(raw["weights"]) == pytest.approx(1.0, abs=1e-5)
    assert "learned weights on PublicTest" in capsys.readouterr().out


def test_cli_errors_are_one_line(members, tmp_path, capsys):
    assert (
        main(["ensemble", "build", "--member", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "e.pt")]) == 4
    )
    assert (
        main(
            [
                "ensemble",
                "build",
                "--member",
                str(members[0]),
                "-o",
                str(tmp_path / "e.pt"),
                "--combine",
                "learned",
            ]
        )
        != 0
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("ferkit: error:") for line in err)
    assert not (tmp_path / "e.pt").exists()
