FROM node:20-bookworm-slim
WORKDIR /app
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
