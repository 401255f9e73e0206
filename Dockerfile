FROM node:20-bookworm-slim
WORKDIR /app
# ffmpeg (with libopus and libmp3lame) makes the compressed archives (ARCHIVE_FORMAT)
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --omit=dev
COPY tsconfig.json ./
COPY gateway ./gateway
COPY recorder ./recorder
COPY codecs ./codecs
ENV NODE_ENV=production RECORDINGS_DIR=/recordings
EXPOSE 8080
# node directly, not npm start: SIGTERM must reach the process so it drains.
CMD ["node", "--import", "tsx", "gateway/main.ts"]
