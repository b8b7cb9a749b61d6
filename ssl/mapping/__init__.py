"""Habitat maps from embeddings: clusters (`clusters`), the images to label first and the
classifier trained on their labels (`labelling`), figures (`figures`) and GIS exports (`gis`,
which may use the geospatial stack)."""
