# Build stage: dev dependencies (TypeScript) compile gateway/, recorder/ and codecs/ to dist/.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would build before the sources are copied (they come next, so a
# source change does not reinstall dependencies); the build runs explicitly below.
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY gateway ./gateway
COPY recorder ./recorder
COPY codecs ./codecs
RUN npm run build

# Runtime stage: production dependencies and the compiled code only, run as the unprivileged
# `node` user of the base image.
FROM node:20-bookworm-slim
WORKDIR /app
# ffmpeg (with libopus and libmp3lame) makes the compressed archives (ARCHIVE_FORMAT)
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# `prepare` is the tsc build, and tsc is a dev dependency: dist/ comes from the build stage.
# Dependencies' own install scripts still run (native modules).
RUN npm pkg delete scripts.prepare && npm ci --omit=dev && npm cache clean --force
COPY --from=build /app/dist ./dist
# The code stays root-owned (the process cannot rewrite it). /recordings belongs to `node`: a
# named volume mounted there starts as a copy of this directory, ownership included.
RUN mkdir -p /recordings && chown node:node /recordings
ENV NODE_ENV=production RECORDINGS_DIR=/recordings
USER node
EXPOSE 8080
# node directly, not npm start: SIGTERM must reach the process so it drains.
CMD ["node", "--enable-source-maps", "dist/gateway/main.js"]
