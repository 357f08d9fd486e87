"""chuk-motion's side: pydantic models, media probing, metadata xattrs, the
catalog and the seed's Python API."""
