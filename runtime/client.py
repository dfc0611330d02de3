"""`ServiceClient`: the CLI's and SDK's HTTP view of a running service (Ollama's CLI-as-client).

Built from the state file (`$FOUNDRY_HOME/service.json`); the API key comes from
`FOUNDRY_API_KEY`. HTTP error bodies in OpenAI's shape are turned back into the matching
`runtime.errors` class so the CLI prints one line and exits with that class's code.
httpx is imported when a client is built, never at module import.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from runtime import errors
from runtime.errors import FoundryError, ServiceNotRunning
from runtime.settings import env

if TYPE_CHECKING:
    import httpx

    from runtime.service.state import ServiceState

__all__ = ["ServiceClient", "error_from_response"]

NOT_RUNNING_HINT = "foundry service start"


def _error_classes() -> dict[str, type[FoundryError]]:
    """code -> leaf class: the service names its error by `code`, we raise the same leaf."""
    table: dict[str, type[FoundryError]] = {}
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, FoundryError):
            table.setdefault(cls.code, cls)
    return table


def _category_for_status(status: int) -> type[FoundryError]:
    return {
        400: errors.InvalidRequest,
        401: errors.Unauthorized,
        404: errors.NotFound,
        409: errors.Conflict,
        413: errors.TooLarge,
        429: errors.TooManyRequests,
        501: errors.NotInstalled,
        503: errors.Unavailable,
    }.get(status, FoundryError)


def error_from_response(status: int, body: Any) -> FoundryError:
    """Rebuild the service's error as a FoundryError leaf (by `code`, else by HTTP status)."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        detail = {"message": f"the service answered HTTP {status}"}
    message = str(detail.get("message") or f"the service answered HTTP {status}")
    cls = _error_classes().get(str(detail.get("code")), None) or _category_for_status(status)
    exc = cls.__new__(cls)
    FoundryError.__init__(exc, message, param=detail.get("param"))
    if isinstance(exc, errors.TooManyRequests):
        exc.retry_after = 1
    if status == 401 and not env("FOUNDRY_API_KEY"):
        exc.hint = "set FOUNDRY_API_KEY to the key the service was started with"
    return exc


class ServiceClient:
    """A connection to the running service.

    Raises:
        ServiceNotRunning: from `from_state()` when no live service wrote the state file,
            and from any call when the service stops answering.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float | None = 30.0):
        import httpx

        self.base_url = base_url.rstrip("/")
        headers = {"user-agent": "foundry-cli"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_state(cls, *, timeout: float | None = 30.0) -> ServiceClient:
        """The client of the service named by the state file."""
        state = cls.state()
        return cls(state.base_url, api_key=env("FOUNDRY_API_KEY"), timeout=timeout)

    @staticmethod
    def state() -> ServiceState:
        from runtime.service.state import running_state

        state = running_state()
        if state is None:
            raise ServiceNotRunning("the foundry service is not running", hint=NOT_RUNNING_HINT)
        return state

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- requests -----------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a non-2xx answer raises the service's error as a FoundryError leaf."""
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceNotRunning(
                f"cannot reach the foundry service at {self.base_url} ({type(exc).__name__})",
                hint=NOT_RUNNING_HINT,
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response.status_code, _json_or_none(response))
        return response

    def get(self, path: str, **params: Any) -> Any:
        params = {k: v for k, v in params.items() if v is not None}
        return _json_or_none(self.request("GET", path, params=params))

    def post(self, path: str, body: Any) -> Any:
        return _json_or_none(self.request("POST", path, json=body))

    def stream_lines(self, method: str, path: str, body: Any = None) -> Generator[str, None, None]:
        """Lines of a streamed answer (SSE or progress lines); closing the iterator hangs up,
        which makes the service cancel the generation."""
        import httpx

        try:
            with self._http.stream(method, path, json=body, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response.status_code, _json_or_none(response))
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise ServiceNotRunning(
                f"lost the connection to the foundry service at {self.base_url}",
                hint=NOT_RUNNING_HINT,
            ) from exc

    # --- Foundry Local management routes ----------------------------------------------
    def health(self) -> dict[str, Any]:
        return self.get("/health")

    def status(self) -> dict[str, Any]:
        return self.get("/openai/status")

    def load(self, model: str, ttl: float | None = None) -> Any:
        """Load `model`; `ttl` seconds idle before it unloads, 0 = stay until unloaded."""
        if ttl == 0:
            return self.get(f"/openai/load/{model}", unload="false")
        return self.get(f"/openai/load/{model}", ttl=ttl)

    def unload(self, model: str, force: bool = False) -> Any:
        return self.get(f"/openai/unload/{model}", force=str(force).lower())

    def loaded(self) -> list[dict[str, Any]]:
        """Resident models with memory and idle time (`/foundry/ps`, this project's extension)."""
        return self.get("/foundry/ps")["models"]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None
