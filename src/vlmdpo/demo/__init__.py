"""The synthetic shapes dataset's parts: what answers say (phrasing) and what pictures show (scenes).

`vlmdpo.demo_data` puts them together into rows; import from there.
"""
