from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_idefics3():
    from vlmdpo.model.tiny import build_tiny

    return build_tiny("idefics3")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from vlmdpo.demo_data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo"), n_train=4, n_val=0, n_test=5, n_pool=0, progress=False)


@pytest.fixture(scope="module")
def demo_records(demo_dir):
    from vlmdpo.data.load import load_preferences

    return load_preferences(str(demo_dir.files["test"])).records
