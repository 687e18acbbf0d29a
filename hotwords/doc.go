// Package hotwords keeps the cluster-wide ranking of the most used words in
// Redis.
//
// # Which words count
//
// Tokens picks the words of a message text:
//
//  1. Each rune is folded with wordfilter.Fold: full-width forms become
//     their ASCII form (U+FF01–U+FF5E to U+0021–U+007E, the ideographic
//     space U+3000 to a space), half-width Katakana and Hangul their wide
//     form, and everything becomes lower case.
//  2. A Han rune (Unicode script Han) belongs to a Han run; any other rune
//     ends the run. Every two adjacent runes of a run make one token
//     (今天天气 gives 今天, 天天, 天气). A run of a single Han rune gives no
//     token: a character standing alone is mostly noise.
//  3. Any other letter (category L), mark (M), decimal digit (Nd) or '*'
//     belongs to a word; any other rune (space, punctuation, symbol, emoji,
//     a Han rune) ends the word. A word is a token unless it contains '*'
//     (the word filter masked it, or part of it), has fewer than 2 or more
//     than 32 runes, has no letter (a number such as 2024), or is one of
//     the stop words: am an and are as at be been but by can did do does
//     don for from had has have he her his if in is it its just ll me my no
//     not of on or re she so that the them they this to us ve was we were
//     what will with you your. Hiragana, Katakana and Hangul are letters,
//     so they form words like Latin ones do.
//  4. Each token counts once per message, in the order it first appears;
//     once 32 distinct tokens are found the rest of the text is ignored.
//
// # Keys
//
//	<p>hotwords        sorted set word -> count, the ranking
//	<p>hotwords:reset  JSON {"node","epoch","at" (unix ms)} of the last reset
//	<p>cluster:epoch   the newest leader epoch (owned by package directory; read here)
//
// Counting is a statistic: callers count off the request path and may drop
// texts when Redis is slow. The leader clears the ranking on a schedule
// (Due, Reset); the reset is fenced by the leader epoch so a deposed
// leader cannot clear what its successor counts. The reset script touches
// keys of both packages, so it needs a single Redis (or a Sentinel-managed
// primary), not Redis Cluster.
package hotwords
