"""EncodedPairs -> batches: the plain layout (`plain`), the fast layouts built on its documents
(`shared`: shared prefix, packed rows), and the one choice between them made at setup (`layout`)."""
