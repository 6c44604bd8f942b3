package web

// ZoneLabel names a time zone as the job pages do, for the tests of
// package web_test.
var ZoneLabel = zoneLabel
