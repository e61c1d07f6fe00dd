import dataclasses
import hashlib
import importlib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from encircle.errors import CheckpointError, DownloadError
from encircle.models.pretrained import (
    PRETRAINED,
    WRN_KEY_RULES,
    create_pretrained,
    list_pretrained,
    load_pretrained,
    map_keys,
)
from encircle.models.wrn import WideResNet

pretrained = importlib.import_module("encircle.models.pretrained")
DEPTH, WIDEN, OUT = 10, 2, 5


def upstream_state_dict(depth=DEPTH, k=WIDEN, out=OUT, prefix="module.", with_counters=True, seed=0):
    """Random weights under the module names of Hendrycks' / pytorch-ood's WideResNet.

    Their network: ``conv1``; ``blockG.layer.I`` with ``bn1, conv1, bn2, conv2`` and
    ``convShortcut`` where the width changes; the final ``bn1``; ``fc``. Optionally as
    saved from ``nn.DataParallel`` (``module.`` prefix) and without the BatchNorm
    counters of files saved before PyTorch 0.4.1.
    """
    gen = torch.Generator().manual_seed(seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()

    def bn(name, c):
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=gen)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=gen)
        sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=gen)
        sd[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=gen)
        if with_counters:
            sd[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    def conv(name, o, i, size):
        sd[f"{name}.weight"] = torch.randn(o, i, size, size, generator=gen) * (2 / (size * size * o)) ** 0.5

    n, widths = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
    conv("conv1", 16, 3, 3)
    for g in (1, 2, 3):
        for i in range(n):
            c_in, c_out, p = widths[g - 1] if i == 0 else widths[g], widths[g], f"block{g}.layer.{i}"
            bn(f"{p}.bn1", c_in)
            conv(f"{p}.conv1", c_out, c_in, 3)
            bn(f"{p}.bn2", c_out)
            conv(f"{p}.conv2", c_out, c_out, 3)
            if c_in != c_out:
                conv(f"{p}.convShortcut", c_out, c_in, 1)
    bn("bn1", widths[3])
    sd["fc.weight"] = 0.1 * torch.randn(out, widths[3], generator=gen)
    sd["fc.bias"] = 0.1 * torch.randn(out, generator=gen)
    return OrderedDict((prefix + key, value) for key, value in sd.items())


def upstream_forward(sd, x, depth=DEPTH):
    """The reference network's forward pass, written on its own state dict (eval mode)."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}

    def bn(name, t):
        return F.batch_norm(
            t, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"], sd[f"{name}.bias"]
        )

    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    for g in (1, 2, 3):
        for i in range((depth - 4) // 6):
            p, stride = f"block{g}.layer.{i}", 2 if g > 1 and i == 0 else 1
            activated = F.relu(bn(f"{p}.bn1", out))
            inner = F.relu(bn(f"{p}.bn2", F.conv2d(activated, sd[f"{p}.conv1.weight"], stride=stride, padding=1)))
            inner = F.conv2d(inner, sd[f"{p}.conv2.weight"], padding=1)
            shortcut = sd.get(f"{p}.convShortcut.weight")
            out = inner + (out if shortcut is None else F.conv2d(activated, shortcut, stride=stride))
    pooled = F.avg_pool2d(F.relu(bn("bn1", out)), 8).flatten(1)
    return F.linear(pooled, sd["fc.weight"], sd["fc.bias"])


@pytest.fixture
def served_entry(isolated_cache, http_server, monkeypatch):
    """An entry ``tiny`` whose upstream-style file (legacy torch format) is served from 127.0.0.1."""
    base, served, handler = http_server
    sd = upstream_state_dict()
    torch.save(sd, served / "w.pt", _use_new_zipfile_serialization=False)  # as the 2019 snapshots
    digest = hashlib.sha256((served / "w.pt").read_bytes()).hexdigest()
    entry = dataclasses.replace(
        PRETRAINED["imagenet32-nocifar"],
        name="tiny",
        url=base + "w.pt",
        sha256=digest,
        kwargs={"depth": DEPTH, "widen_factor": WIDEN, "dropout": 0.0, "out_features": OUT},
    )
    monkeypatch.setitem(PRETRAINED, "tiny", entry)
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "0")
    return sd, entry, handler, isolated_cache


def test_upstream_file_is_downloaded_mapped_and_computes_the_same(served_entry):
    sd, entry, handler, cache = served_entry
    model = create_pretrained("tiny").eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), upstream_forward(sd, x), atol=1e-5)
    assert torch.equal(model.stem.weight, sd["module.conv1.weight"])
    assert torch.equal(model.group2[0].shortcut.weight, sd["module.block2.layer.0.convShortcut.weight"])
    assert torch.equal(model.norm.running_var, sd["module.bn1.running_var"])
    assert (cache / "weights" / entry.file_name).is_file() and len(handler.requests) == 1
    create_pretrained("tiny")  # cached and verified: not fetched again
    assert len(handler.requests) == 1


def test_create_with_another_head(served_entry):
    model = create_pretrained("tiny", out_features=7).eval()
    assert model.fc.out_features == 7 and model.out_features == 7
    x = torch.randn(2, 3, 32, 32)
    reference = WideResNet(depth=DEPTH, widen_factor=WIDEN, dropout=0.0, out_features=OUT).eval()
    load_pretrained("tiny", reference)
    assert torch.allclose(model.forward_features(x), reference.forward_features(x))


def test_body_only_into_a_network_with_its_own_head(served_entry):
    model = WideResNet(depth=DEPTH, widen_factor=WIDEN, out_features=7)
    head = model.fc.weight.clone()
    load_pretrained("tiny", model, include_head=False)
    assert torch.equal(model.fc.weight, head)
    with pytest.raises(
        CheckpointError,
        match=r"2 shapes differ: fc.bias \(5,\) in the file, \(7,\) in the network, fc.weight \(5, 128\)",
    ):
        load_pretrained("tiny", WideResNet(depth=DEPTH, widen_factor=WIDEN, out_features=7))


def test_checksum_mismatch_removes_the_file(served_entry, monkeypatch):
    _, entry, _, cache = served_entry
    monkeypatch.setitem(PRETRAINED, "tiny", dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(DownloadError, match=r"checksum mismatch for http://127.0.0.1:\d+/w.pt: expected sha256 0{64}"):
        create_pretrained("tiny")
    assert list((cache / "weights").iterdir()) == []


def test_architecture_mismatch_lists_keys_and_shapes(served_entry):
    with pytest.raises(CheckpointError) as deeper:
        load_pretrained("tiny", WideResNet(depth=16, widen_factor=WIDEN, out_features=OUT))
    message = str(deeper.value)
    assert message.endswith("group1.1.bn2.weight and 22 more")  # 10 keys in each of the 3 extra blocks
    assert "does not fit this WideResNet: 30 missing keys: group1.1.bn1.bias, group1.1.bn1.running_mean" in message
    with pytest.raises(CheckpointError) as narrower:
        load_pretrained("tiny", WideResNet(depth=DEPTH, widen_factor=1, out_features=OUT))
    message = str(narrower.value)
    assert "1 unexpected keys: group1.0.shortcut.weight;" in message  # k = 1: the first group keeps 16 channels
    assert "group1.0.conv1.weight (32, 16, 3, 3) in the file, (16, 16, 3, 3) in the network" in message


def test_offline_without_the_file_says_where_to_put_it(served_entry, monkeypatch):
    _, entry, handler, cache = served_entry
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "1")
    path = cache / "weights" / entry.file_name
    with pytest.raises(CheckpointError) as info:
        create_pretrained("tiny")
    message = str(info.value)
    assert f"pretrained weights 'tiny' are needed at {path} but it is not there and $ENCIRCLE_OFFLINE is set" in message
    assert f"download {entry.url} (sha256 {entry.sha256}) and put it at {path}" in message
    assert handler.requests == []
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "0")
    with pytest.raises(CheckpointError, match="downloads are disabled"):
        create_pretrained("tiny", download_missing=False)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"tampered")
    monkeypatch.setenv("ENCIRCLE_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="but its checksum differs and"):
        create_pretrained("tiny")


def test_local_files(tmp_path):
    source = WideResNet(depth=DEPTH, widen_factor=1, out_features=3)
    torch.save(source.state_dict(), tmp_path / "ours.pt")  # already in encircle's names
    torch.save({"state_dict": upstream_state_dict(k=1, out=3, prefix="")}, tmp_path / "wrapped.pt")
    torch.save(upstream_state_dict(k=1, out=3, with_counters=False), tmp_path / "old.pt")
    for name in ("ours.pt", "wrapped.pt", "old.pt"):
        model = WideResNet(depth=DEPTH, widen_factor=1, out_features=3)
        load_pretrained(tmp_path / name, model)
    assert torch.equal(model.group1[0].bn1.num_batches_tracked, torch.tensor(0))  # kept where the file has none
    load_pretrained(str(tmp_path / "ours.pt"), model)
    assert torch.equal(model.stem.weight, source.stem.weight)


class Payload:
    pass


def test_unsafe_and_malformed_files(tmp_path):
    model = WideResNet(depth=DEPTH, widen_factor=1)
    torch.save({"net": Payload()}, tmp_path / "code.pt")
    with pytest.raises(
        CheckpointError, match=r"cannot load the weights file '.*code\.pt' safely \(weights_only=True\)"
    ):
        load_pretrained(tmp_path / "code.pt", model)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"holds no state dict .*; got list"):
        load_pretrained(tmp_path / "list.pt", model)
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"holds no state dict .*; got \['epoch', 'optimizer'\]"):
        load_pretrained(tmp_path / "other.pt", model)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "list.pt").read_bytes()[:50])
    with pytest.raises(CheckpointError, match=r"cannot load the weights file '.*cut\.pt' safely"):
        load_pretrained(tmp_path / "cut.pt", model)
    with pytest.raises(CheckpointError, match=r"'nope' are neither a known name \(cifar10-pt, imagenet32, .*\) nor"):
        load_pretrained("nope", model)
    with pytest.raises(CheckpointError, match=r"unknown pretrained weights 'nope'; expected one of cifar10-pt"):
        create_pretrained("nope")


def test_key_mapping_table():
    names = {
        "module.conv1.weight": "stem.weight",
        "block1.layer.0.bn1.running_mean": "group1.0.bn1.running_mean",
        "block2.layer.0.convShortcut.weight": "group2.0.shortcut.weight",
        "block3.layer.5.conv2.weight": "group3.5.conv2.weight",
        "bn1.weight": "norm.weight",
        "fc.bias": "fc.bias",
        "group1.0.bn1.weight": "group1.0.bn1.weight",  # encircle's own names stay
    }
    tmp = Path("f.pt")
    mapped = map_keys({k: torch.zeros(1) for k in names}, WRN_KEY_RULES, tmp)
    assert list(mapped) == list(names.values())
    ours = WideResNet(out_features=OUT).state_dict()
    assert set(map_keys(upstream_state_dict(depth=40), WRN_KEY_RULES, tmp)) == set(ours)  # WRN-40-2: every key
    with pytest.raises(CheckpointError, match=r"two keys map onto 'stem.weight' \(one of them 'module.conv1.weight'\)"):
        map_keys({"conv1.weight": torch.zeros(1), "module.conv1.weight": torch.zeros(1)}, WRN_KEY_RULES, tmp)


def test_registry_entries():
    assert list_pretrained() == ["cifar10-pt", "imagenet32", "imagenet32-nocifar", "oe-cifar10-tune"]
    seed = PRETRAINED["imagenet32-nocifar"]
    assert seed.architecture == "wrn" and seed.kwargs["out_features"] == 1000 and seed.mean == (0.5, 0.5, 0.5)
    assert all(len(e.sha256) == 64 and e.url.startswith("https://") for e in PRETRAINED.values())
    assert len({e.file_name for e in PRETRAINED.values()}) == len(PRETRAINED)
    assert pretrained.WRN_KEY_RULES is WRN_KEY_RULES


#: The registry as it stood before its entries were built by a factory (a snapshot):
#: name -> (url, sha256, architecture, kwargs, mean, std, reference).
_HALF = (0.5, 0.5, 0.5)
_CIFAR = (
    (0.4913725490196078, 0.4823529411764706, 0.4466666666666667),
    (0.24705882352941178, 0.24352941176470588, 0.2615686274509804),
)
REGISTRY_SNAPSHOT = {
    "imagenet32": (
        "https://github.com/hendrycks/pre-training/raw/master/downsampled_train/snapshots/40_2/"
        "imagenet_wrn_baseline_epoch_99.pt",
        "4a722ecf93e43a040b6b82c7c1e305fbf1c455a54c16e66fd77301291157bd5c",
        "wrn",
        {"depth": 40, "widen_factor": 2, "dropout": 0.3, "out_features": 1000},
        _HALF,
        _HALF,
        "Hendrycks et al., ICML 2019, https://arxiv.org/abs/1901.09960",
    ),
    "imagenet32-nocifar": (
        "https://github.com/hendrycks/pre-training/raw/master/uncertainty/CIFAR/snapshots/imagenet/"
        "cifar10_excluded/imagenet_wrn_baseline_epoch_99.pt",
        "6f0f46d44ddfc96f85b97ef04ca9d61e78279d27c80015dcc92aabd52b1773c6",
        "wrn",
        {"depth": 40, "widen_factor": 2, "dropout": 0.3, "out_features": 1000},
        _HALF,
        _HALF,
        "Hendrycks et al., ICML 2019, https://arxiv.org/abs/1901.09960",
    ),
    "cifar10-pt": (
        "https://github.com/wetliu/energy_ood/raw/master/CIFAR/snapshots/pretrained/cifar10_wrn_pretrained_epoch_99.pt",
        "0b59e178577382a0cf5d1e079d1d019f6a33b0801b7d123a59e51b4b32972637",
        "wrn",
        {"depth": 40, "widen_factor": 2, "dropout": 0.3, "out_features": 10},
        *_CIFAR,
        "Liu et al., NeurIPS 2020, https://arxiv.org/abs/2010.03759",
    ),
    "oe-cifar10-tune": (
        "https://github.com/hendrycks/outlier-exposure/raw/master/CIFAR/snapshots/oe_tune/cifar10_wrn_oe_tune_epoch_9.pt",
        "b473f1c463c9fe16057647746907b68b6ade615f93ac4bdf005263ed69d542d0",
        "wrn",
        {"depth": 40, "widen_factor": 2, "dropout": 0.3, "out_features": 10},
        *_CIFAR,
        "Hendrycks et al., ICLR 2019, https://arxiv.org/abs/1812.04606",
    ),
}


def test_registry_matches_the_snapshot():
    """Every entry's URL, checksum, architecture, arguments, normalisation and key mapping, exactly."""
    assert list(PRETRAINED) == list(REGISTRY_SNAPSHOT)
    for name, entry in PRETRAINED.items():
        assert entry.name == name
        got = (entry.url, entry.sha256, entry.architecture, dict(entry.kwargs), entry.mean, entry.std, entry.reference)
        assert got == REGISTRY_SNAPSHOT[name], name
        assert entry.key_rules is WRN_KEY_RULES and entry.head == "fc"
        assert entry.file_name == f"{name}-{entry.sha256[:12]}.pt"


def test_a_state_dict_with_names_that_are_not_strings_is_refused(tmp_path):
    """Its keys are renamed with re.sub, which would raise a TypeError on an int."""
    torch.save({1: torch.zeros(1)}, tmp_path / "int-keys.pt")
    with pytest.raises(CheckpointError, match=r"weights file '.*int-keys\.pt' holds no state dict .*; got \['1'\]"):
        load_pretrained(tmp_path / "int-keys.pt", WideResNet(depth=DEPTH, widen_factor=1))
