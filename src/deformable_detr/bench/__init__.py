"""Benchmarks behind `deformable-detr bench TARGET`: each prints a table and writes one JSON file whose
`header` comes from `harness.header()`. No assertions on time anywhere."""
