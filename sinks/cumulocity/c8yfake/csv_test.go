package c8yfake

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseSmartREST(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want [][]string
		err  string // substring of the error, "" = none
	}{
		{"Simple", "211,21.5", [][]string{{"211", "21.5"}}, ""},
		{"MultiLine", "211,1\n212,2\n", [][]string{{"211", "1"}, {"212", "2"}}, ""},
		{"CRLFAndBlankLines", "211,1\r\n\r\n\n212,2", [][]string{{"211", "1"}, {"212", "2"}}, ""},
		{"EmptyFields", "401,1,2,,,", [][]string{{"401", "1", "2", "", "", ""}}, ""},
		{"TrailingFieldsDropped", "100", [][]string{{"100"}}, ""},
		{"UnquotedTrimmed", " 211 , 21.5 ", [][]string{{"211", "21.5"}}, ""},
		{"QuotedComma", `400,t,"a, b",`, [][]string{{"400", "t", "a, b", ""}}, ""},
		{"DoubledQuote", `400,t,"say ""hi"""`, [][]string{{"400", "t", `say "hi"`}}, ""},
		{"BackslashQuote", `400,t,"say \"hi\""`, [][]string{{"400", "t", `say "hi"`}}, ""},
		{"QuotedNewlineAndTab", "400,t,\"a\nb\tc\"\n211,1", [][]string{{"400", "t", "a\nb\tc"}, {"211", "1"}}, ""},
		{"QuotedEdgeBlanksKept", `400,t," x "`, [][]string{{"400", "t", " x "}}, ""},
		{"QuotedEmpty", `400,"",""`, [][]string{{"400", "", ""}}, ""},
		{"BlankAfterClosingQuote", `400,"t" ,x`, [][]string{{"400", "t", "x"}}, ""},
		{"QuoteInsideUnquoted", `400,t,5" screen`, [][]string{{"400", "t", `5" screen`}}, ""},
		{"NonASCII", "400,t,Hall Ö – 東京", [][]string{{"400", "t", "Hall Ö – 東京"}}, ""},
		{"Unterminated", "211,1\n400,t,\"open", [][]string{{"211", "1"}}, "line 2: unterminated"},
		{"TextAfterClosingQuote", `400,"t"x,y`, nil, "line 1: text after the closing quote"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSmartREST(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseSmartREST(%q) = %q, want %q", tc.in, got, tc.want)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// The line writer used for replies is read back by the parser.
func TestCSVLineRoundTrip(t *testing.T) {
	fields := []string{"45", "201", `Value is not a NUMBER: "x,y"`, " edge ", "tab\tnew\nline", "Ö"}
	got, err := ParseSmartREST(csvLine(fields...))
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], fields) {
		t.Errorf("round trip = %q, %v; want %q", got, err, fields)
	}
}

func TestParseNumber(t *testing.T) {
	for _, s := range []string{"0", "-1", "+2.5", "1e3", "1.5E-7", ".5", "5."} {
		if _, err := parseNumber(s); err != nil {
			t.Errorf("parseNumber(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "abc", "NaN", "Inf", "0x10", "1,5", "1e999", "--1", "1 2"} {
		if _, err := parseNumber(s); err == nil {
			t.Errorf("parseNumber(%q) accepted", s)
		}
	}
}

func TestParseTime(t *testing.T) {
	for _, s := range []string{"2024-03-12T08:15:42.517Z", "2024-03-12T08:15:42+01:00", "2024-03-12T08:15:42.123456+0100"} {
		if _, err := parseTime(s); err != nil {
			t.Errorf("parseTime(%q): %v", s, err)
		}
	}
	for _, s := range []string{"2024-03-12T08:15:42.517", "2024-03-12 08:15:42Z", "yesterday", "1710231342"} {
		if _, err := parseTime(s); err == nil {
			t.Errorf("parseTime(%q) accepted", s)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, s := range []string{"c8y_Temperature", "wittra_wittra_lpth_humidity", "T", "a-b", "Ö"} {
		if err := checkName("fragment", s); err != nil {
			t.Errorf("checkName(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "a b", "a.b", "a,b", "a*", "a[0]", "f(x)", "a@b", "$a", "tab\t"} {
		if err := checkName("fragment", s); err == nil {
			t.Errorf("checkName(%q) accepted", s)
		}
	}
}
