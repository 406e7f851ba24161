"""gevent's monkey-patching without its 25 scans of every installed package.

`monkey.patch_all()`, which gunicorn's gevent worker calls as it boots, tells each of its steps to
the plugins packages may register as entry points, and looks them up anew for every step: 25
calls of `importlib.metadata.entry_points()`, each reading the metadata of every installed
distribution. With the test dependencies installed (69 distributions) that cost 0.15 to 0.2 s of
CPU per worker boot, more than importing the app; every start, restart and reload paid it.

The installed packages do not change while a worker boots, so they are read once here, and each
step picks its plugins from that one reading: the same plugins, called in the same way.
gunicorn.conf.py's post_fork calls this in the new worker, before it patches. The function it
stands in for is copied from the gevent releases below; another gevent keeps its own.
"""

GEVENT_RELEASES = ("26.9.0",)  # whose notify_and_call_entry_points this was checked against


def look_up_plugins_once() -> None:
    from importlib import metadata

    import gevent
    from gevent import events

    if gevent.__version__ not in GEVENT_RELEASES or getattr(events.notify_and_call_entry_points, "looks_up_once", False):
        return
    installed = metadata.entry_points()  # every group, in one scan

    def notify_and_call_entry_points(event):
        """gevent.events.notify_and_call_entry_points (gevent 26.9), from the one reading."""
        events.notify(event)
        for plugin in installed.select(group=event.ENTRY_POINT_NAME):
            subscriber = plugin.load()
            subscriber(event)

    notify_and_call_entry_points.looks_up_once = True
    # gevent imports the function from events at each step, so each step finds this one.
    events.notify_and_call_entry_points = notify_and_call_entry_points
