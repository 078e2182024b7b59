"""The model registry: a replaced loader never borrows the real model's identity (and so never
its cached ONNX export, which would silently embed with the real model instead of the fake)."""

from __future__ import annotations

from vsearch.models import loading as models


def test_the_default_model_is_identified_without_loading_it():
    found = models.identify(models.DEFAULT_MODEL)
    assert found is not None and found.name == models.DEFAULT_MODEL and found.dim == 1280


def test_a_replaced_loader_has_no_identity(monkeypatch):
    monkeypatch.setitem(models._REGISTRY, models.DEFAULT_MODEL, lambda name, device, threads: None)
    assert models.identify(models.DEFAULT_MODEL) is None


def test_register_without_identify_drops_the_old_one():
    name = "registry-test-model"
    models.register(name, lambda n, d, t: None, identify=lambda n: models.identify(models.DEFAULT_MODEL))
    try:
        assert models.identify(name) is not None
        models.register(name, lambda n, d, t: None)
        assert models.identify(name) is None
    finally:
        models.unregister(name)
