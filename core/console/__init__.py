"""The operator console: the frame the host serves (login, layout, navigation, static files)
and the core's own screens; plugins add theirs through `postroom_http_routes`."""


def build_app(host):
    """The HTTP app with the console: the frame's routes, and every non-public group of
    routes behind the console's guard."""
    from .. import web
    from . import frame
    app = web.build_app(host, extra_routes=frame.routes(), wrap_console=frame.guard)
    app.state.templates = frame.environment(app.state.groups)
    return app
