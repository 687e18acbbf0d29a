package hotwords

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestTokens(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"english", "Redis cluster failover works", []string{"redis", "cluster", "failover", "works"}},
		{"case folded", "Redis REDIS redis", []string{"redis"}},
		{"punctuation splits", "go-redis, zookeeper! (mongo)", []string{"go", "redis", "zookeeper", "mongo"}},
		{"stop words", "The cat and the dog is in it, you know", []string{"cat", "dog", "know"}},
		{"contractions", "don't we've you'll they're", nil},
		{"short words", "a b c x y ok", []string{"ok"}},
		{"numbers", "2024 15:30 42 v2 3d 1st", []string{"v2", "3d", "1st"}},
		{"full-width", "ＨＥＬＬＯ　Ｗｏｒｌｄ hello", []string{"hello", "world"}},
		{"full-width digits", "２０２４ ｖ２", []string{"v2"}},
		{"accents", "Café CAFÉ naïve", []string{"café", "naïve"}},
		{"chinese bigrams", "今天天气", []string{"今天", "天天", "天气"}},
		{"chinese runs", "今天，天气好。", []string{"今天", "天气", "气好"}},
		{"single han dropped", "好 的 吗", nil},
		{"han next to latin", "用go写服务", []string{"go", "写服", "服务"}},
		{"mixed", "Go语言很好 go", []string{"go", "语言", "言很", "很好"}},
		{"repeated bigram", "哈哈哈哈", []string{"哈哈"}},
		{"kana is a word", "今日はいい天気", []string{"今日", "はいい", "天気"}},
		{"hangul is a word", "안녕하세요 세계", []string{"안녕하세요", "세계"}},
		{"masked", "you *** idiot ***", []string{"idiot"}},
		{"partly masked", "***minton b*d", nil},
		{"masked han", "你这个**吧", []string{"你这", "这个"}},
		{"emoji splits", "party🎉time", []string{"party", "time"}},
		{"too long", strings.Repeat("x", 33) + " " + strings.Repeat("y", 32), []string{strings.Repeat("y", 32)}},
		{"empty", "", nil},
		{"only spaces", " \t\n\u3000", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Tokens(tc.text); !slices.Equal(got, tc.want) {
				t.Fatalf("Tokens(%q) = %q, want %q", tc.text, got, tc.want)
			}
		})
	}
}

func TestTokensAtMost32(t *testing.T) {
	var words []string
	for i := range 40 {
		words = append(words, fmt.Sprintf("word%c%c", 'a'+i/26, 'a'+i%26))
	}
	got := Tokens(strings.Join(words, " ") + " " + strings.Join(words, " "))
	if !slices.Equal(got, words[:MaxTokens]) {
		t.Fatalf("Tokens = %q, want the first %d words", got, MaxTokens)
	}
	var han []rune
	for r := rune(0x4E00); r < 0x4E00+40; r++ {
		han = append(han, r)
	}
	got = Tokens(string(han))
	if len(got) != MaxTokens || got[0] != string(han[:2]) || got[MaxTokens-1] != string(han[MaxTokens-1:MaxTokens+1]) {
		t.Fatalf("Han tokens %q, want the first %d bigrams", got, MaxTokens)
	}
}

func TestTokensStopWordsNeverCount(t *testing.T) {
	for _, w := range strings.Fields("am an and are as at be been but by can did do does don for from had has have he her his if in is it its just ll me my no not of on or re she so that the them they this to us ve was we were what will with you your") {
		if !isStopWord([]byte(w)) {
			t.Errorf("%q is documented as a stop word but is not one", w)
		}
		if got := Tokens(strings.ToUpper(w)); got != nil {
			t.Errorf("Tokens(%q) = %q", strings.ToUpper(w), got)
		}
	}
}
