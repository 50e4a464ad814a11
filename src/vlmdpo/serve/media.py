"""The images of a request, through `vlmdpo.data.images` (its decompression-bomb check, RGB, resizing).

Data URIs always; http(s) only with --allow-remote-images; local paths only inside --image-root
(after resolving symlinks and `..`), so a client cannot read the server's files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmdpo.serve.schema import ApiError, ImageSpec, bad


@dataclass(frozen=True)
class ImagePolicy:
    allow_remote: bool = False
    image_root: Path | None = None
    max_pixels: int | None = None  # resize larger images down (as training did)
    min_pixels: int | None = None


def _local_ref(spec: ImageSpec, policy: ImagePolicy):
    from vlmdpo.data.images import resolve_image

    if policy.image_root is None:
        raise bad(spec.param, "local image paths are off on this server; send the image as a "
                  "data:image/png;base64,... URI (or start the server with --image-root DIR)")
    root = policy.image_root.resolve()
    text = spec.url.removeprefix("file://")
    ref = resolve_image(text, image_root=root)
    real = Path(os.path.realpath(ref.path))
    if real != root and root not in real.parents:
        raise bad(spec.param, f"{spec.url!r} is outside the server's --image-root; use a path inside it or a data URI")
    return ref


def load_request_image(spec: ImageSpec, policy: ImagePolicy) -> Any:
    """One image as a PIL RGB image, or a 400 naming `spec.param` and the fix."""
    from vlmdpo.data.images import ImageLoadError, ImageSpecError, load_image, resolve_image

    url = spec.url.strip()
    try:
        if url.startswith("data:"):
            ref = resolve_image(url)
        elif url.lower().startswith(("http://", "https://")):
            if not policy.allow_remote:
                raise bad(spec.param, "image URLs are off on this server; send the image as a data:image/png;base64,... "
                          "URI (or start the server with --allow-remote-images)")
            ref = resolve_image(url, allow_remote=True)
        elif "://" in url and not url.startswith("file://"):
            raise bad(spec.param, f"URL scheme of {url[:40]!r} is not supported; send a data:image/...;base64 URI")
        else:
            ref = _local_ref(spec, policy)
        return load_image(ref, max_pixels=policy.max_pixels, min_pixels=policy.min_pixels,
                          allow_remote=policy.allow_remote)
    except (ImageSpecError, ImageLoadError) as exc:
        raise bad(spec.param, f"{exc.message}; send a valid PNG or JPEG as a data:image/png;base64,... URI",
                  "invalid_image") from None


def load_request_images(specs: list[ImageSpec], policy: ImagePolicy, limit: int) -> list[Any]:
    if len(specs) > limit:
        where = specs[limit].param  # the first image past the limit
        what = "takes no images (a text-only model)" if limit == 0 else f"takes at most {limit} image(s) per request"
        raise ApiError(400, f"{where}: this model {what}; the request has {len(specs)}; send fewer images",
                       param=where, code="too_many_images")
    return [load_request_image(spec, policy) for spec in specs]
