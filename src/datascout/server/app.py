"""The labeling web app: a FastAPI application over a :class:`~datascout.campaign.Campaign`.

Endpoints (documented at ``/docs``, OpenAPI at ``/openapi.json``): ``POST /api/batch``,
``POST /api/labels``, ``GET /api/stats``, ``GET /api/export``, ``GET /api/config``,
``GET /api/items/{id}/image``; under ``/ml/``, Label Studio's machine-learning backend protocol
(``health``, ``setup``, ``predict``) and its annotation ``webhook`` (its shapes, not in the OpenAPI
document; see :mod:`datascout.labelstudio.backend`). Every error, whatever raised it, is ``{"error": "..."}`` with a
4xx status and changes nothing. A GET changes nothing either: leasing is a POST.
"""

from __future__ import annotations

import reprlib
from contextlib import asynccontextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from datascout.campaign import EXPORT_FORMATS, Campaign, ConflictError, NotFoundError
from datascout.campaign.core import MAX_BATCH
from datascout.exceptions import DatascoutError, MissingDependencyError
from datascout.io import raster_media_type
from datascout.labelstudio.backend import Predictor, take_webhook
from datascout.server.security import HEADERS, Guard, UnservableFile, read_registered_file

STATIC = Path(__file__).parent / "static"
RASTER_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


# -- what goes in ------------------------------------------------------------------------------

class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


ANNOTATOR = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="who labels: 1-64 letters, digits, _-.@")


class BatchIn(In):
    annotator: str = ANNOTATOR
    n: int = Field(10, ge=1, le=MAX_BATCH, description="how many items to lease")


class LabelIn(In):
    id: str = Field(min_length=1, max_length=512)
    label: str | None = Field(description="a class name, or null to skip the item")


class LabelsIn(In):
    annotator: str = ANNOTATOR
    labels: list[LabelIn] = Field(min_length=1, max_length=10 * MAX_BATCH)


class LabelStudioIn(BaseModel):
    """What Label Studio posts to the machine-learning backend (its own shapes: kept as they are)."""
    model_config = ConfigDict(extra="allow")


class PredictIn(LabelStudioIn):
    tasks: list[dict] = Field(max_length=100 * MAX_BATCH)


# -- what comes out (extra fields the library adds later pass through, declared as allowed) ---

class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="what was expected and what was received, in one line")


class Progress(Out):
    round: int
    selected: int = Field(description="items selected in this round")
    done: int = Field(description="items of this round answered by as many annotators as asked")


class Prediction(Out):
    label: str = Field(description="the class the model predicted when the item was selected")
    probability: float


class SelectedBy(Out):
    strategy: str | None = Field(description="why the item was chosen: the round's strategy, 'random', "
                                 "'query', or 'review' (a label asked again, blind)")
    score: float | None = Field(description="the item's score under that strategy (higher = asked first)")
    audit: bool = Field(description="part of the uniform random audit sample (never trained on)")


class ItemOut(Out):
    id: str
    kind: Literal["text", "image"]
    text: str | None = Field(None, description="text items only; an image is at /api/items/{id}/image")
    prediction: Prediction | None = Field(None, description="the model's guess; null before the first model")
    selected_by: SelectedBy | None = None


class Audit(Out):
    labels: int = Field(description="audit labels the figure rests on")
    metric: str = Field(description="accuracy (several classes; macro_f1 beside it) or average_precision (a rare concept)")
    value: float | None
    ci: list[float] | None = Field(description="95% interval [low, high]")


class LeaseHolder(Out):
    annotator: str
    items: int
    until: float = Field(description="Unix time the last of these leases expires")


class Leases(Out):
    live: int
    by_annotator: list[LeaseHolder]


class Review(Out):
    queued: int = Field(description="labels the audit suspected, asked again of other annotators")
    open: int
    done: int
    changed: int = Field(description="reviewed items that now resolve to another class")


class KappaPair(Out):
    a: str
    b: str
    items: int
    kappa: float


class Agreement(Out):
    pairs: list[KappaPair] = Field(description="Cohen's kappa of each pair of annotators with 2+ items in common")
    alpha: float | None = Field(description="Krippendorff's alpha (nominal) over every annotator")
    items_with_several_answers: int


class BatchOut(Out):
    round: int
    items: list[ItemOut]
    lease_expires: float = Field(description="Unix time until which the items stay leased to you")
    progress: Progress
    selecting: bool = Field(description="the next round is being selected")
    exhausted: bool = Field(description="every item is labeled or was selected: the campaign is complete")


class LabelsOut(Out):
    accepted: int
    relabels: int = Field(description="how many replaced an earlier answer of the same annotator (kept as history)")
    progress: Progress
    selecting: bool


class LabelCounts(Out):
    answers: int
    skips: int
    items_answered: int
    items_labeled: int
    relabels: int
    items_total: int


class AnnotatorOut(Out):
    name: str
    answers: int
    skips: int
    last: float | None


class Disagreement(Out):
    id: str
    answers: dict[str, str]


class Disagreements(Out):
    items: int
    examples: list[Disagreement]


class RoundOut(Out):
    round: int
    strategy: str
    settings: dict[str, Any]
    selected: int
    answered: int
    labeled: int
    positives: int | None
    labels_before: int
    cv: dict[str, int | float] | None
    audit: Audit | None = None
    created: float


class StatsOut(Out):
    classes: list[str]
    positive_class: str | None
    strategy: str
    progress: Progress
    selecting: bool
    exhausted: bool
    last_error: str | None = Field(description="why the last background selection failed, if it did")
    labels: LabelCounts
    class_counts: dict[str, int]
    positives_found: int | None
    annotators: list[AnnotatorOut]
    disagreements: Disagreements
    rounds: list[RoundOut]
    learning_curve: list[dict[str, Any]]
    model: dict[str, int | float] | None
    audit: Audit = Field(description="the model's quality on the audit sample (the honest figure)")
    leases: Leases
    review: Review
    agreement: Agreement
    annotator_quality: dict[str, float] = Field(description="each annotator's estimated quality (CROWDLAB)")
    stopping: dict[str, Any] = Field(description="which stopping rules have fired (rule -> round), when, and the "
                                                 "audit metric then (datascout.campaign.stopping)")


class ConfigOut(Out):
    classes: list[str]
    positive_class: str | None
    strategy: str
    batch_size: int
    keys: dict[str, str] = Field(description="keyboard key -> class name")
    name: str


def errors(*statuses: int) -> dict:
    """OpenAPI entries for the error statuses a route can return, all of the one error shape."""
    why = {400: "the request names something the campaign refuses (a bad annotator name, an unknown class), "
                "or a host this server does not answer to",
           401: "no valid 'Authorization: Bearer TOKEN' header", 403: "a state change sent from another site",
           404: "no such item (or its file cannot be served)", 409: "the item is not leased to this annotator",
           413: "the request body is too large", 415: "the request body is not JSON",
           422: "the request does not match its schema (or its JSON does not parse)"}
    return {s: {"model": ErrorOut, "description": why[s]} for s in statuses}


def swagger_assets() -> Path:
    """Swagger UI's files, shipped by the ``fastapi-offline`` package (the ``server`` extra)."""
    spec = find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the API docs need the 'server' extra: pip install 'datascout[server]'")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def create_app(directory, *, token: str | None = None, select_in: str = "process",
               hosts: frozenset[str] | None = None) -> FastAPI:
    """The labeling app of the campaign in ``directory``. Rounds are selected in a separate
    process by default (``select_in="process"``), so training never competes with the requests
    for the interpreter; ``"thread"`` keeps it in this process. ``hosts``: the only host names
    the app answers to (``serve`` on a loopback address passes the loopback names), or any."""
    campaign = Campaign(directory, select_in=select_in)
    assets = swagger_assets()

    @asynccontextmanager
    async def lifespan(app):
        if not campaign.maybe_advance():  # a round that completed just before a crash selects its successor
            campaign.warm_up()  # else the selection process starts now, idle, ready for the first boundary
        yield
        campaign.wait_idle(30.0)

    app = FastAPI(title="datascout labeling", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Label the items the active-learning campaign selects. Every state change is a "
                              "POST with a JSON body; errors are `{\"error\": \"...\"}`."
                              + (" Every `/api/` call needs `Authorization: Bearer TOKEN`." if token else ""))
    app.state.campaign = campaign
    app.add_middleware(Guard, token=token, hosts=hosts)

    def err(status: int, message: str, headers=None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return err(422, f"expected a JSON body but it does not parse: {first.get('ctx', {}).get('error', '?')}")
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        got = first.get("input")
        if where == "annotator" and first.get("type") == "string_pattern_mismatch":
            return err(422, f"an annotator name is 1-64 letters, digits or _ . @ - (no spaces) but got {reprlib.repr(got)}")
        got = f" (got {reprlib.repr(got)})" if isinstance(got, (str, int, float, bool, list)) else ""
        return err(422, f"{where or 'request'}: {first.get('msg', 'invalid request')}{got}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        if exc.status_code == 400 and str(exc.detail) == "There was an error parsing the body":
            # a body that is not UTF-8 or nests too deep: the same answer as any JSON that does not parse
            return err(422, "expected a JSON body but it does not parse: not UTF-8 text, or nested too deep")
        message = {404: f"no such page: {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"
                        + (f" (allowed: {exc.headers['Allow']})" if exc.headers and "Allow" in exc.headers else "")
                   }.get(exc.status_code, str(exc.detail))
        return err(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(DatascoutError)
    async def user_error(request, exc: DatascoutError):
        status = 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError) else 400
        return err(status, str(exc))

    @app.exception_handler(Exception)
    async def bug(request, exc: Exception):  # answered past the middleware: the headers go on here
        r = err(500, f"internal error ({type(exc).__name__}); the server log has the details")
        for k, v in HEADERS:
            r.headers[k.decode()] = v.decode()
        return r

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    app.mount("/static/swagger", StaticFiles(directory=assets), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # declares the bearer scheme in OpenAPI; Guard enforces it before any route runs
    api = APIRouter(prefix="/api", dependencies=[Depends(HTTPBearer(auto_error=False))] if token else [],
                    responses=errors(*[s for s, on in ((400, hosts is not None), (401, token)) if on]))

    @api.get("/config", response_model=ConfigOut, summary="Classes, keyboard shortcuts and campaign settings")
    def config():
        cfg = campaign.config
        return {"classes": cfg["classes"], "positive_class": cfg["positive_class"],
                "strategy": cfg["strategy"], "batch_size": cfg["batch_size"],
                "keys": {str(i + 1): c for i, c in enumerate(cfg["classes"][:9])},
                "name": campaign.directory.name}

    @api.post("/batch", response_model=BatchOut, response_model_exclude_unset=True,
              responses=errors(400, 403, 413, 415, 422),
              summary="Lease up to n items of the current round to an annotator")
    def batch(body: BatchIn):
        out = campaign.lease_batch(body.annotator, body.n)
        return {**out, "exhausted": campaign.exhausted}

    @api.post("/labels", response_model=LabelsOut, responses=errors(400, 403, 404, 409, 413, 415, 422),
              summary="Record labels (null = skip); committed before the answer")
    def labels(body: LabelsIn):
        return campaign.submit(body.annotator, [(x.id, x.label) for x in body.labels])

    @api.get("/stats", response_model=StatsOut,
             summary="Rounds, labels, class counts, positives, disagreements, model quality")
    def stats():
        return {**campaign.stats(), "exhausted": campaign.exhausted}

    @api.get("/export", response_class=Response, responses={**errors(422), 200: {
        "description": "; ".join(f"`{name}`: {what}" for name, (what, _, _) in EXPORT_FORMATS.items()),
        "content": {media: {"schema": {"type": "array", "items": {"type": "object"}} if media == "application/json"
                            else {"type": "string"}} for _, media, _ in EXPORT_FORMATS.values()}}},
        summary="Labels as CSV, JSONL or Label Studio tasks (with predictions)")
    def export(format: Literal[tuple(EXPORT_FORMATS)] = Query("jsonl")):  # noqa: F821 (a Literal of the table's names)
        text = campaign.export(format)
        _, media, ext = EXPORT_FORMATS[format]
        return Response(text, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="labels.{ext}"'})

    # ``:path`` so that ids holding "/" (``train/cat/001.png``, common for images) route too;
    # the id only selects a row, the file served is the one registered for it at init
    @api.get("/items/{item_id:path}/image", response_class=Response, responses={**errors(404), 200: {
        "description": "the item's image, as the raster type its bytes are (never SVG or HTML)",
        "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in RASTER_TYPES}}},
        summary="The image of an image item registered in the campaign")
    def image(item_id: str):
        row = campaign.con.execute("SELECT kind, payload FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None or row[0] != "image":
            raise NotFoundError(f"no image item {item_id!r} in this campaign")
        try:
            data = read_registered_file(row[1])
        except UnservableFile as exc:
            raise NotFoundError(f"the image file of item {item_id!r} {exc}") from None
        media = raster_media_type(data[:16])
        if media is None:
            raise NotFoundError(f"the file of item {item_id!r} is not a PNG, JPEG, GIF or WebP image: not served")
        return Response(data, media_type=media)

    app.include_router(api)

    # Label Studio's machine-learning backend protocol (Settings -> Model, URL http://HOST:PORT/ml)
    # and its webhook: its shapes, not ours, so they stay out of the OpenAPI document
    predictor = Predictor(campaign)
    ml = APIRouter(prefix="/ml", include_in_schema=False)

    @ml.get("/health")
    def ml_health():
        return {"status": "UP", "model_class": "datascout", "model_version": predictor.model_version()}

    @ml.post("/setup")
    def ml_setup(body: LabelStudioIn):
        return {"model_version": predictor.model_version()}

    @ml.post("/predict")
    def ml_predict(body: PredictIn):
        return {"results": predictor.predict(body.tasks), "model_version": predictor.model_version()}

    @ml.post("/webhook")
    def ml_webhook(body: LabelStudioIn):
        return take_webhook(campaign, body.model_dump())

    app.include_router(ml)

    def openapi():
        """FastAPI's document, less the 422 it adds to every route with a parameter: the routes
        that can return 422 declare it with the app's error shape; the image route cannot."""
        if app.openapi_schema is None:
            spec = FastAPI.openapi(app)
            for item in spec["paths"].values():
                for op in item.values():
                    bad = op["responses"].get("422", {}).get("content", {}).get("application/json", {})
                    if bad.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                        del op["responses"]["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                spec.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema

    app.openapi = openapi
    return app
