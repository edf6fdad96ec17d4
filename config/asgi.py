import os

from django.core.asgi import get_asgi_application

from config.middleware import StaticFilesHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Static files are served by the app itself in the embedded setup (no CDN, no extra server),
# with the security headers pages have (no middleware runs for them).
django_asgi_app = StaticFilesHandler(get_asgi_application())

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from runner.events.routing import websocket_urlpatterns  # noqa: E402

from . import celery  # noqa: E402, F401  (the server sends trials: Celery loaded before the first)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
