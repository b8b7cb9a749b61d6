"""The encoder out to the tools people use, and ImageNet's encoder in: `ssl.export` files load
with strict=True into plain torchvision and timm models that give the project's features, and
`ssl.evaluate --baseline imagenet` reads torchvision's weights from the local torch cache only.
Small models, tiny images, eval mode; no weights are downloaded (the tests make their own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from seafloor_ssl.export import main
from seafloor_ssl.training.export import TIMM_MODELS, vit_config
from seafloor_ssl.training.models import Encoder
from seafloor_ssl.training.objective import init_encoder
from seafloor_ssl.training.pretrained import imagenet_encoder, imagenet_weights
from surveys import mini_manifest
from torch import nn

REPO = Path(__file__).resolve().parents[1]


def encoder(backbone: str, seed: int = 0) -> Encoder:
    """A randomly initialised encoder whose batch-norm statistics are not the defaults (so an
    export that lost them would show), in eval mode."""
    torch.manual_seed(seed)
    enc = Encoder(backbone)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return enc.eval()


def checkpoint(path: Path, enc: Encoder, objective: str = "simclr", image_size: int = 32
               ) -> Path:
    """A checkpoint as python -m ssl.train writes it (the entries the encoder is read from)."""
    torch.save({"step": 7, "encoder": enc.state_dict(), "feat_dim": enc.feat_dim,
                "args": {"objective": objective, "backbone": enc.backbone_name,
                         "image_size": image_size}}, path)
    return path


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def torchvision_model(backbone: str, size: int, path: Path) -> nn.Module:
    """What the README tells a user to write (strict=True is load_state_dict's default)."""
    if backbone.startswith("vit"):
        model = torchvision.models.VisionTransformer(**vit_config(backbone, size))
        model.heads = nn.Identity()
    else:
        model = getattr(torchvision.models, backbone)()
        model.fc = nn.Identity()
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    return model


def timm_model(backbone: str, size: int, path: Path) -> nn.Module:
    timm = pytest.importorskip("timm")
    extra = {"img_size": size} if backbone.startswith("vit") and size != 224 else {}
    return timm.create_model(TIMM_MODELS[backbone], num_classes=0, checkpoint_path=str(path),
                             **extra)


# backbone, --image-size (None: the default), input side
CASES = [("resnet18", None, 32), ("resnet50", None, 32), ("vit-tiny", 32, 32),
         ("vit-tiny", None, 224)]


@pytest.mark.parametrize("fmt", ["torchvision", "timm"])
@pytest.mark.parametrize("backbone, image_size, side", CASES)
def test_an_export_loads_strictly_and_gives_the_encoders_features(backbone, image_size, side,
                                                                  fmt, tmp_path, capsys):
    enc = encoder(backbone)
    ckpt = checkpoint(tmp_path / "last.pt", enc, image_size=side)
    out = tmp_path / f"{backbone}.pth"
    argv = ["--checkpoint", str(ckpt), "--format", fmt, "--out", str(out)]
    assert main(argv + (["--image-size", str(image_size)] if image_size else [])) == 0
    printed = capsys.readouterr().out
    assert f"[export] wrote {out}" in printed and "normalised with mean" in printed
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    load = torchvision_model if fmt == "torchvision" else timm_model
    model = load(backbone, side, out)
    ref = features(enc.backbone, x)
    got = features(model, x)
    assert got.shape == ref.shape == (2, enc.feat_dim)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5 * max(1.0, ref.abs().max().item()))
    if image_size is None:  # the trained grid: ssl.train --init takes the file back exactly
        again = Encoder(backbone).eval()
        init_encoder(again, str(out))
        assert all(torch.equal(v, enc.backbone.state_dict()[k])
                   for k, v in again.backbone.state_dict().items())


def test_the_readme_snippet_loads_an_export_in_plain_torchvision(tmp_path):
    """The three lines of the README, run in a fresh interpreter that never imports the
    project."""
    enc = encoder("resnet18")
    out = tmp_path / "encoder.pth"
    assert main(["--checkpoint", str(checkpoint(tmp_path / "last.pt", enc)), "--out",
                 str(out)]) == 0
    text = (REPO / "README.md").read_text()
    start = text.index("```python\nimport torch, torchvision\n") + len("```python\n")
    snippet = text[start:text.index("```", start)].replace("encoder.pth", str(out))
    assert len(snippet.strip().splitlines()) == 3, snippet
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    code = (snippet + f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
            f"torch.save(model.eval()(x).detach(), {str(tmp_path / 'f.pt')!r})\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "f.pt"), features(enc.backbone, x),
                               rtol=0, atol=1e-5)


def test_a_csp_checkpoint_exports_its_locked_image_encoder(tmp_path, capsys):
    enc = encoder("resnet18")
    ckpt = checkpoint(tmp_path / "last.pt", enc, objective="csp")
    out = tmp_path / "csp.pth"
    assert main(["--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert "a CSP checkpoint" in capsys.readouterr().out
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(features(torchvision_model("resnet18", 32, out), x),
                               features(enc.backbone, x), rtol=0, atol=1e-5)


def refused(argv: list[str], capsys) -> str:
    """The command refuses: exit status 2 and one error line, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_mistakes_are_one_message_and_exit_2_and_nothing_is_replaced(tmp_path, capsys):
    r18 = checkpoint(tmp_path / "r18.pt", encoder("resnet18"))
    tiny = checkpoint(tmp_path / "tiny.pt", Encoder("tiny"))
    plain = tmp_path / "resnet18.pth"  # a torchvision state dict is not a checkpoint
    torch.save(torchvision.models.resnet18().state_dict(), plain)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    out = tmp_path / "encoder.pth"

    err = refused(["--checkpoint", str(plain), "--out", str(out)], capsys)
    assert "not a seafloor-ssl training checkpoint" in err and "last.pt" in err
    err = refused(["--checkpoint", str(notes), "--out", str(out)], capsys)
    assert "cannot be read as a PyTorch checkpoint" in err
    err = refused(["--checkpoint", str(tmp_path), "--out", str(out)], capsys)
    assert "is a folder" in err
    for fmt in ("timm", "torchvision"):
        err = refused(["--checkpoint", str(tiny), "--format", fmt, "--out", str(out)], capsys)
        assert "'tiny'" in err and "resnet18" in err
    err = refused(["--checkpoint", str(r18), "--image-size", "32", "--out", str(out)], capsys)
    assert "--image-size is for the ViT backbones" in err
    vit = checkpoint(tmp_path / "vit.pt", Encoder("vit-tiny"))
    err = refused(["--checkpoint", str(vit), "--image-size", "40", "--out", str(out)], capsys)
    assert "multiple of 16" in err
    assert not out.exists()

    # a file the project did not write is never replaced, --overwrite or not
    for extra in ([], ["--overwrite"]):
        for other in (notes, plain, r18):
            before = other.read_bytes()
            err = refused(["--checkpoint", str(r18), "--out", str(other), *extra], capsys)
            assert "not a file written by ssl.export" in err
            assert other.read_bytes() == before
    err = refused(["--checkpoint", str(r18), "--out", str(tmp_path)], capsys)
    assert "is a folder" in err

    # an earlier export: replaced only with --overwrite
    assert main(["--checkpoint", str(r18), "--out", str(out)]) == 0
    first = out.read_bytes()
    err = refused(["--checkpoint", str(r18), "--format", "timm", "--out", str(out)], capsys)
    assert "holds an earlier export" in err and "--overwrite" in err
    assert out.read_bytes() == first
    assert main(["--checkpoint", str(r18), "--format", "timm", "--out", str(out),
                 "--overwrite"]) == 0
    assert out.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["r18.pt", "tiny.pt", "resnet18.pth", "notes.txt", "vit.pt", "encoder.pth"])


def test_init_refuses_an_export_at_another_vit_size(tmp_path):
    from seafloor_ssl.training.run import TrainingError

    vit = checkpoint(tmp_path / "vit.pt", Encoder("vit-tiny"))
    assert main(["--checkpoint", str(vit), "--image-size", "32", "--out",
                 str(tmp_path / "v.pth")]) == 0
    with pytest.raises(TrainingError, match="2 x 2 patch grid; --init needs 14 x 14"):
        init_encoder(Encoder("vit-tiny"), str(tmp_path / "v.pth"))


# --- the ImageNet baseline --------------------------------------------------------------------

@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def place_weights(backbone: str = "resnet18") -> tuple[nn.Module, Path]:
    """A randomly initialised torchvision model saved where torchvision caches its ImageNet
    weights (the expected file name; not the published weights)."""
    _, path = imagenet_weights(backbone)
    torch.manual_seed(5)
    model = getattr(torchvision.models, backbone)()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model, path


def test_the_imagenet_baseline_uses_exactly_the_cached_weights(torch_home, capsys):
    label, path = imagenet_weights("resnet18")
    assert label == "ResNet18_Weights.IMAGENET1K_V1"
    assert path == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    model, _ = place_weights()
    enc, got_label, got_path = imagenet_encoder("resnet18")
    assert (got_label, got_path) == (label, path)
    # not the published file: said, not hidden
    assert "not torchvision's published" in capsys.readouterr().err
    model.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(features(enc.backbone, x), features(model, x), rtol=0, atol=0)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return mini_manifest(tmp_path_factory.mktemp("export") / "site")


def test_evaluate_baseline_imagenet_end_to_end(manifest, torch_home, tmp_path, capsys):
    from seafloor_ssl.evaluation.run import main as evaluate

    out = tmp_path / "eval"
    argv = ["--baseline", "imagenet", "--backbone", "resnet18", "--image-size", "32",
            "--manifest", str(manifest), "--out", str(out), "--device", "cpu", "--seeds", "0",
            "--probes", "svm", "--regimes", "all", "--dims", "full", "--no-spatial-tasks"]
    assert evaluate(argv) == 2  # no weights in the cache: one message, nothing downloaded
    err = capsys.readouterr().err.strip()
    _, path = imagenet_weights("resnet18")
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "resnet18-f37072fd.pth" in err and str(path) in err and "IMAGENET1K_V1" in err
    assert not out.exists() and not path.exists()
    place_weights()
    assert evaluate(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["checkpoint"]["objective"] == "imagenet" and m["checkpoint"]["backbone"] == "resnet18"
    assert m["results"] and 0 <= m["reference"]["macro_f1"] <= 1
    assert "not torchvision's published" in capsys.readouterr().err  # random weights: said
    # a damaged file: one message that says to replace it
    path.write_bytes(path.read_bytes()[:1000])
    assert evaluate([*argv, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be read as torchvision's" in err and len(err.splitlines()) == 1
    # a backbone torchvision has no ImageNet weights of
    argv[argv.index("resnet18")] = "vit-tiny"
    assert evaluate([*argv, "--overwrite"]) == 2
    assert "resnet18 or resnet50" in capsys.readouterr().err


def test_the_reproduction_adds_the_imagenet_row_only_with_the_weights(torch_home):
    from seafloor_ssl.reproduce import imagenet_available, report

    absent = imagenet_available("resnet18")
    assert not absent["present"] and "resnet18-f37072fd.pth" in absent["note"]
    assert str(torch_home) not in absent["why"]  # the report names no local path
    assert not imagenet_available("tiny")["present"]
    _, path = place_weights()
    present = imagenet_available("resnet18")
    assert present["present"] and present["file"] == path.name

    row = {"probe": "svm", "dims": "full", "regime": "all", "macro_f1": {"values": [0.5]},
           "accuracy": {"values": [0.6]}}
    res = {"preset": "cpu", "manifest": "m", "device": "CPU", "seconds": 60.0,
           "config": {"backbone": "resnet18", "image_size": 32, "batch_size": 8, "steps": 1,
                      "csp_steps": 1, "train_seeds": [0], "eval_seeds": [0]},
           "evals": {"imagenet": [{"results": [row]}]}, "imagenet": present}
    # the columns no run measured (128 dims, 10 labels, kNN, cross-dive) are left out
    assert "| imagenet | 0.500 ± 0.000 | 0.600 ± 0.000 |" in report(res)
    res["evals"], res["imagenet"] = {}, {k: v for k, v in absent.items() if k != "note"}
    text = report(res)
    assert "| imagenet |" not in text and "No imagenet row:" in text

