"""geopy adapters: the geocoder (with its cache and the district-centroid fallback) and distances."""
