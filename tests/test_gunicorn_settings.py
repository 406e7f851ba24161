"""gateway/gunicorn_settings.py: a setting read once is kept on the Config, and reads the same;
a setting set later is read anew; what is no setting still raises."""

import pytest
from gunicorn import config as gunicorn_config

from gateway import gunicorn_settings


def test_a_setting_is_kept_after_its_first_read_and_set_reads_anew():
    gunicorn_settings.install()
    gunicorn_settings.install()  # twice: one wrapper, not two
    assert gunicorn_config.Config.__getattr__.keeps_values
    cfg = gunicorn_config.Config()
    assert "keepalive" not in vars(cfg)
    assert cfg.keepalive == 2 and vars(cfg)["keepalive"] == 2  # kept where a plain attribute is found
    cfg.set("keepalive", 9)
    assert cfg.keepalive == 9
    assert cfg.limit_request_fields == 100 and cfg.strip_header_spaces is False
    with pytest.raises(AttributeError, match="No configuration setting for: no_such_setting"):
        cfg.no_such_setting
    with pytest.raises(AttributeError, match="Invalid access"):
        cfg.keepalive = 3  # gunicorn's own guard stands
    assert cfg.keepalive == 9


def test_the_gunicorn_release_installed_is_one_the_lookup_was_checked_against():
    import gunicorn

    assert gunicorn.__version__ in gunicorn_settings.GUNICORN_RELEASES


APP = r"""
import sys
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "gunicorn":
    import gunicorn.config
from app import create_app
create_app()
config = sys.modules.get("gunicorn.config")
print(config is not None and getattr(config.Config.__getattr__, "keeps_values", False))
"""


@pytest.mark.parametrize("served_by, kept", [("gunicorn", "True"), ("another server", "False")])
def test_the_app_installs_it_only_where_gunicorn_runs_it(served_by, kept, tmp_path):
    import subprocess
    import sys

    from tests.gunicorn_server import ROOT

    env = {"PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", APP, str(ROOT), served_by], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == kept
