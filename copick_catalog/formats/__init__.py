"""File formats copick projects hold: read what the catalog needs, open payloads, write what copick reads.

One module per format: :mod:`.picks` (pick and filament JSON), :mod:`.zarr` (zarr group headers and
OME-NGFF writers; :mod:`.zarrio` is the only code that calls the zarr library), :mod:`.glb` (meshes)
and :mod:`.mrc` (the seed's density maps). Readers raise :class:`~copick_catalog.errors.PayloadError`
naming the file and the fix.
"""
