"""Security headers on every response (pages and static files) and the client's address."""

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler


def security_headers(response, request=None):
    """The headers every response carries: the content security policy (no inline scripts),
    no sniffing, no framing, no referrer to other sites, HSTS over HTTPS when configured."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
    headers.setdefault("Referrer-Policy", settings.SECURE_REFERRER_POLICY or "same-origin")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", settings.X_FRAME_OPTIONS)
    headers.setdefault("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY)
    if settings.SECURE_HSTS_SECONDS and request is not None and request.is_secure():
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.setdefault("Strict-Transport-Security", value)
    return response


class ContentSecurityPolicyMiddleware:
    """Adds the security headers to every response Django's views make."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return security_headers(self.get_response(request), request)


class StaticFilesHandler(ASGIStaticFilesHandler):
    """Django's ASGI static files handler (no middleware runs for it), with the same headers."""

    async def get_response_async(self, request):
        return security_headers(await super().get_response_async(request), request)


def client_ip(request):
    """The address log-in attempts are counted against (django-axes).

    REMOTE_ADDR, or behind TRUSTED_PROXIES proxies the address the outermost one saw:
    each proxy appends the address it received from to X-Forwarded-For."""
    remote = request.META.get("REMOTE_ADDR") or ""
    hops = settings.TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if hops > 0 and forwarded:
        chain = [a.strip() for a in forwarded.split(",") if a.strip()]
        if chain:
            return chain[-min(hops, len(chain))]
    return remote
