// Lint with type information (issue 14): the type-checked rules catch what tsc does not,
// above all promises nobody awaits (a lost write or an unhandled rejection on the media path).
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['dist/', 'node_modules/', 'coverage/', '.tap/', 'eslint.config.js'] },
  // A disable comment that no longer suppresses anything is an error: merges must not leave stale ones.
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': ['error', {
        // tap queues a subtest and waits for it; its promise resolves with the results, failures included.
        allowForKnownSafePromises: [{ from: 'package', name: 'PromiseWithSubtest', package: '@tapjs/core' }],
      }],
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-unnecessary-condition': 'error',
      // `async` here fulfils Promise-returning contracts (Fastify handlers and hooks, store interfaces,
      // tap callbacks): dropping it would turn a rejection into a synchronous throw.
      '@typescript-eslint/require-await': 'off',
      // A leading underscore marks a name kept unused on purpose (interface-shaped parameters, omitted keys).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true }],
    },
  },
  {
    // The core (recorder/, codecs/) must not import the edge (gateway/): config, HTTP and the
    // Twilio protocol depend on the core, never the other way (issue 14). What the core needs
    // from the edge's world (per-account settings, the frame payload limit) is defined in the core.
    files: ['recorder/**/*.ts', 'codecs/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{
          regex: '(^|/)gateway(/|$)',
          message: 'recorder/ and codecs/ are the core and must not import gateway/ (the edge); move what is shared into the core.',
        }],
      }],
    },
  },
  {
    // Tests probe untyped wire data (JSON bodies, Twilio frames) and assert on it; the assertions are the check.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
);
