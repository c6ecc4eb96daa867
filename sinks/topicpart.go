package sinks

import (
	"errors"
	"strings"
)

// CheckTopicPart rejects what would make a bad topic out of a configured
// prefix or id: emptiness, MQTT wildcards, NUL, and empty levels; '/' only
// when multiLevel.
func CheckTopicPart(s string, multiLevel bool) error {
	switch {
	case s == "":
		return errors.New("empty")
	case strings.ContainsAny(s, "+#\x00"):
		return errors.New("contains + # or NUL")
	case !multiLevel && strings.Contains(s, "/"):
		return errors.New("contains /")
	case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//"):
		return errors.New("has an empty topic level")
	}
	return nil
}
