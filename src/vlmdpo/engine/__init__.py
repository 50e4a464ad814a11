"""The data engine: sample candidates, judge them, make preference pairs (`vlmdpo sample|judge|pairs`)."""
