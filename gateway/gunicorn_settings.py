"""gunicorn's settings, read by a worker as plain attributes after the first time.

A gunicorn worker reads its settings on every request: `cfg.keepalive`, the request-line and
header limits, `cfg.strip_header_spaces` once per header line: 37 reads for a curl request, one
more per header line. Each goes through `Config.__getattr__` and the setting's `get()`: ~0.8 µs, where
an attribute of the instance takes 0.06. So the first read of a setting keeps its value on the
instance, where later reads find it; `Config.set` drops what was kept for that name, so a value
set later is read anew (a worker sets nothing; the master sets settings as it loads its config).

Installed by create_app where gunicorn is running it; the gunicorn releases it was checked
against are listed (another keeps its own lookup).
"""

import sys

GUNICORN_RELEASES = ("27.0.1",)


def install() -> None:
    config = sys.modules.get("gunicorn.config")
    if config is None:
        return  # not served by gunicorn
    import gunicorn

    looked_up, changed = config.Config.__getattr__, config.Config.set
    if gunicorn.__version__ not in GUNICORN_RELEASES or getattr(looked_up, "keeps_values", False):
        return

    def __getattr__(self, name):
        value = looked_up(self, name)  # raises AttributeError for what is no setting
        self.__dict__[name] = value  # Config.__setattr__ refuses setting names: the instance's dict takes it
        return value

    def set(self, name, value):
        changed(self, name, value)
        self.__dict__.pop(name, None)

    __getattr__.keeps_values = True
    config.Config.__getattr__ = __getattr__
    config.Config.set = set
