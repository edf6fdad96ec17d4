from django.urls import path

from .consumer import RunConsumer

websocket_urlpatterns = [
    path("ws/runs/<uuid:code>/", RunConsumer.as_asgi()),
]
